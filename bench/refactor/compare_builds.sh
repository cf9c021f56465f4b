#!/usr/bin/env bash
# Do two builds train the same, bit for bit? For changes that must not change behaviour (a
# redesign, a refactor): the same pretraining and fine-tuning runs with each build's
# binaries, then their losses (log.jsonl at full precision, TensorBoard scalars), checkpoint
# and optimizer bytes, predictions, logits, exported weights and saved configurations
# compared.
#
#   bench/refactor/compare_builds.sh OLD_BIN NEW_BIN [OUT]
#
# OLD_BIN and NEW_BIN each hold biobert, biobert-core and corpus-tools (e.g. a worktree's
# target/debug copied aside). The runs (about 1.5 minutes a build on 2 cores): pretraining
# from scratch with evaluation and a resume past the end; all-MiniLM-L6-v2 with LAMB, poly
# decay, accumulation, unpad and whole-word masking; two ranks under mpirun; fine-tuning NER
# and RE; an RE run failed after its first epoch and resumed. Prints "identical" and exits
# 0, or the differing lines and exits 1.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ $# -ge 2 ] || { echo "usage: compare_builds.sh OLD_BIN NEW_BIN [OUT]" >&2; exit 2; }
OLD=$1 NEW=$2 OUT=${3:-/tmp/biobert-compare-builds}
PYTHON=$ROOT/.venv/bin/python
mkdir -p "$OUT"
for side in old new; do
  bin=$OLD; [ "$side" = new ] && bin=$NEW
  echo "compare_builds.sh: $side build from $bin" >&2
  "$ROOT/bench/refactor/runs.sh" "$bin" "$OUT/$side"
  "$PYTHON" "$ROOT/bench/refactor/digest.py" "$OUT/$side" > "$OUT/$side.digest"
done
if diff "$OUT/old.digest" "$OUT/new.digest"; then
  echo "identical: $(wc -l < "$OUT/new.digest") values and digests ($OUT/new.digest)"
else
  exit 1
fi
