#!/usr/bin/env bash
# The throughput levers in one GPU call: BERT-base (bert-base-cased shape), bf16, at seq 128
# and seq 512, with the binaries of bench/gpu/stage.sh. No Hugging Face runs: their numbers
# on the same GPU are recorded (BENCHMARKS.md) and the last table compares against them.
#
#   BENCH_OUT=$OUT bench/gpu/levers.sh      # both shapes, about 5 min on an H200
#   bench/gpu/levers.sh --cpu               # every command small on the CPU: a check of the
#                                           # script before GPU time is spent on it
#
# Per shape: `bf16_residual` alone (the QKV split and the step that never waits for the
# device are in every run), then with `unpad`; three profiled steps of the best setting,
# summarised by bench/gpu/trace_summary.py (time by category, the GPU's busy share, the
# longest kernels, the achieved GEMM rate); a micro-batch sweep with peak memory. It ends
# with one table: each lever, its prediction (BENCHMARKS.md, "Throughput levers"), what was
# measured, and what the number decides. Everything goes to $BENCH_OUT (default
# /tmp/biobert-gpu-levers): each run's log, results.jsonl, the traces and their summaries,
# and levers.md.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
MODE=gpu
[ "${1:-}" = --cpu ] && MODE=cpu
# shellcheck source=bench/gpu/binaries.sh
source bench/gpu/binaries.sh
OUT=${BENCH_OUT:-/tmp/biobert-gpu-levers}
WORK=$OUT/work
mkdir -p "$WORK"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
# shellcheck source=launch/env.sh
source launch/env.sh || exit 1
PYTHON=${BIOBERT_PYTHON:-python3}
# "SEQ BATCH PREDICTIONS SWEEP": the sweep's other micro-batch sizes, comma separated.
if [ "$MODE" = gpu ]; then
  DEVICE=cuda STEPS=${STEPS:-30} SWEEP_STEPS=20 PROFILE=(--max-steps 8 --profile 6:3)
  ABSTRACTS=1500 SHAPES=${SHAPES:-128 256 20 128,384;512 32 80 16,64}
  MODEL=(--config configs/biobert_base.toml --set model.init=scratch)
else
  DEVICE=cpu STEPS=${STEPS:-4} SWEEP_STEPS=2 PROFILE=(--max-steps 4 --profile 2:3)
  ABSTRACTS=120 SHAPES=${SHAPES:-64 8 10 4;128 4 20 2,8}
  MODEL=(--config configs/tiny.toml)
fi
echo "levers.sh: $MODE mode; binaries from $BIN; $STEPS steps per run; results in $OUT"
# shellcheck source=bench/gpu/run_helpers.sh
source bench/gpu/run_helpers.sh
synthetic_corpus "$ABSTRACTS" || exit 1
host_line "$MODE" >> "$RESULTS"

# ours NAME SEQ BATCH PRED STEPS UNPAD [ARGS...]: one pretraining run, its result line.
ours() {
  local name=$1 seq=$2 batch=$3 pred=$4 steps=$5 unpad=$6
  shift 6
  local run
  run=$WORK/run-$seq-$batch-$(echo "$name" | tr -c 'a-z0-9\n' '-')
  rm -rf "$run"
  echo "== seq $seq x batch $batch: $name, $steps steps"
  peak_memory "$run.log" "$BIN/biobert" pretrain "${MODEL[@]}" --data "$CORPUS" --out "$run" \
    --device "$DEVICE" --max-steps "$steps" --set data.max_seq_len="$seq" \
    --set data.max_predictions_per_seq="$pred" --set train.micro_batch_size="$batch" \
    --set train.precision=bf16 --set train.bf16_residual=true --set train.unpad="$unpad" \
    --set train.warmup_steps=$((steps < 10 ? steps : 10)) --set train.learning_rate=1e-4 \
    --set log.every=$((steps < 10 ? 1 : 10)) --set log.eval_every=0 --set checkpoint.every=0 \
    --set checkpoint.at_end=false "$@" || { tail -20 "$run.log"; return 1; }
  cp "$run.log" "$OUT/"
  grep -E "^step " "$run.log" | tail -1
  "$PYTHON" bench/gpu/report.py ours "$run/log.jsonl" "$seq" "$batch" "$(cat "$WORK/peak")" "$name" >> "$RESULTS"
}

IFS=';' read -r -a SHAPE_LIST <<< "$SHAPES"
for shape in "${SHAPE_LIST[@]}"; do
  read -r SEQ BATCH PRED SWEEP <<< "$shape"
  ours "bf16 residual" "$SEQ" "$BATCH" "$PRED" "$STEPS" false || exit 1
  ours "bf16 residual, unpad" "$SEQ" "$BATCH" "$PRED" "$STEPS" true || exit 1
  # The fused element-wise kernels run on GPUs only (the CPU refuses the setting: check.sh).
  if [ "$MODE" = gpu ]; then
    ours "bf16 residual, unpad, fused" "$SEQ" "$BATCH" "$PRED" "$STEPS" true \
      --set train.fused_elementwise=true || exit 1
  else
    echo "== seq $SEQ x batch $BATCH: bf16 residual, unpad, fused: GPUs only (check.sh checks the CPU's refusal)"
  fi
  echo "== seq $SEQ x batch $BATCH: profiled steps (bf16 residual, unpad)"
  RUN=$WORK/profile-$SEQ
  rm -rf "$RUN"
  "$BIN/biobert" pretrain "${MODEL[@]}" --data "$CORPUS" --out "$RUN" --device "$DEVICE" \
    "${PROFILE[@]}" --set data.max_seq_len="$SEQ" --set data.max_predictions_per_seq="$PRED" \
    --set train.micro_batch_size="$BATCH" --set train.precision=bf16 \
    --set train.bf16_residual=true --set train.unpad=true --set train.warmup_steps=1 \
    --set log.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false \
    > "$OUT/profile-$SEQ.log" 2>&1 || { tail -20 "$OUT/profile-$SEQ.log"; exit 1; }
  TRACE=$(find "$RUN/profile" -name 'trace_rank0_*.json' | head -n1)
  [ -n "$TRACE" ] || { echo "levers.sh: no trace in $RUN/profile"; exit 1; }
  "$PYTHON" bench/gpu/trace_summary.py "$TRACE" --json "$OUT/trace-$SEQ.json" | tee "$OUT/trace-$SEQ.txt" || exit 1
  gzip -c "$TRACE" > "$OUT/trace-$SEQ.json.gz"
  IFS=',' read -r -a SIZES <<< "$SWEEP"
  for size in "${SIZES[@]}"; do
    ours "bf16 residual, unpad" "$SEQ" "$size" "$PRED" "$SWEEP_STEPS" true || exit 1
  done
done
echo
"$PYTHON" bench/gpu/levers_report.py "$RESULTS" "$OUT" | tee "$OUT/levers.md"
