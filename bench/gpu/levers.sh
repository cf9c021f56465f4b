#!/usr/bin/env bash
# The throughput levers in one GPU call: BERT-base (bert-base-cased shape), bf16, at seq 128
# and seq 512, with the binaries of bench/gpu/stage.sh. No Hugging Face runs: their numbers
# on the same GPU are recorded (BENCHMARKS.md) and the last table compares against them.
#
#   BENCH_OUT=$OUT bench/gpu/levers.sh      # both shapes and fine-tuning, about 8 min on an
#                                           # H200 (estimated): split it as below
#   BENCH_OUT=$OUT SHAPES="512 32 80 16,64" FINETUNE=0 bench/gpu/levers.sh   # one part of it
#   bench/gpu/levers.sh --cpu               # every command small on the CPU: a check of the
#                                           # script before GPU time is spent on it
#
# Per shape: `bf16_residual` alone (the QKV split and the step that never waits for the
# device are in every run), then with `unpad`, then (GPUs) with the fused element-wise
# kernels, then with the weights cast once per step (at seq 512 also with 4 micro-batches
# a step, with and without); three profiled steps of the best setting, summarised by
# bench/gpu/trace_summary.py (time by category, the GPU's busy share, the longest kernels,
# the achieved GEMM rate); a micro-batch sweep with peak memory. Then fine-tuning's step
# time (NER, the shipped config, on a synthetic set of NCBI-disease's shape). It ends
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
  ABSTRACTS=1500 SHAPES=${SHAPES:-128 256 20 128,384;512 32 80 16,64} ACCUM_SEQ=512
  MODEL=(--config configs/biobert_base.toml --set model.init=scratch)
else
  DEVICE=cpu STEPS=${STEPS:-4} SWEEP_STEPS=2 PROFILE=(--max-steps 4 --profile 2:3)
  ABSTRACTS=120 SHAPES=${SHAPES:-64 8 10 4;128 4 20 2,8} ACCUM_SEQ=128
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
  ours "bf16 residual, unpad, cast once" "$SEQ" "$BATCH" "$PRED" "$STEPS" true \
    --set train.cast_weights_once=true || exit 1
  # Casting once saves a cast per weight per micro-batch: measured where steps accumulate
  # (the long-sequence phase, as NVIDIA's recipe runs it), with and without.
  if [ "$SEQ" = "$ACCUM_SEQ" ]; then
    ours "bf16 residual, unpad, accumulation 4" "$SEQ" "$BATCH" "$PRED" "$SWEEP_STEPS" true \
      --set train.grad_accumulation=4 || exit 1
    ours "bf16 residual, unpad, accumulation 4, cast once" "$SEQ" "$BATCH" "$PRED" "$SWEEP_STEPS" true \
      --set train.grad_accumulation=4 --set train.cast_weights_once=true || exit 1
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
# Fine-tuning's step time: NER with the shipped NER config (batch 32, seq 192; 128 on the
# CPU, the tiny model's limit) on a synthetic
# set of NCBI-disease's shape, from a BERT-base of the benchmark's shape (one pretraining
# step, exported): the shipped default, then `unpad`, then (GPUs) the fused kernels too.
# FINETUNE=0 leaves this part out (e.g. in a second call with SHAPES set to the other shape).
if [ "${FINETUNE:-1}" = 1 ]; then
echo "== fine-tuning NER: the model (BERT-base, one pretraining step, exported)"
"$PYTHON" bench/gpu/make_ner_set.py "$WORK/ner" "$WORK/src-$ABSTRACTS/vocab.txt" > /dev/null || exit 1
rm -rf "$WORK/ft-base" "$WORK/ft-hf"
"$BIN/biobert" pretrain "${MODEL[@]}" --data "$CORPUS" --out "$WORK/ft-base" --device "$DEVICE" \
  --max-steps 1 --set data.max_seq_len=128 --set data.max_predictions_per_seq=20 \
  --set train.micro_batch_size=8 --set train.warmup_steps=1 --set log.eval_every=0 \
  --set checkpoint.every=0 --set checkpoint.at_end=true > "$OUT/ft-base.log" 2>&1 &&
  "$BIN/biobert" export --checkpoint "$WORK/ft-base/checkpoints/step_00000001" --out "$WORK/ft-hf" \
    >> "$OUT/ft-base.log" 2>&1 || { tail -20 "$OUT/ft-base.log"; exit 1; }
# finetune_step NAME ARGS...: one epoch over the first $FT_TRAIN sentences, its ms a step.
finetune_step() {
  local name=$1 run=$WORK/ft-$(echo "$1" | tr -c 'a-z0-9\n' '-')
  shift
  rm -rf "$run"
  echo "== fine-tuning NER: $name, $FT_TRAIN sentences"
  peak_memory "$run.log" "$BIN/biobert" finetune ner --model "$WORK/ft-hf" --data "$WORK/ner" \
    --out "$run" --limit-train "$FT_TRAIN" --limit-eval 16 --set epochs=1 \
    --set select_on_dev=false --set device="$DEVICE" --set max_seq_len="$FT_SEQ" "$@" ||
    { tail -20 "$run.log"; return 1; }
  cp "$run.log" "$OUT/"
  "$PYTHON" - "$name" "$run/metrics.json" "$FT_TRAIN" "$(cat "$WORK/peak")" "$FT_SEQ" >> "$RESULTS" <<'PY'
import json, math, sys
name, metrics, sentences, peak, seq = sys.argv[1:6]
seconds = json.load(open(metrics))["train_seconds"]
steps = math.ceil(int(sentences) / 32)
print(json.dumps({"finetune": name, "seq": int(seq), "steps": steps,
                  "ms_per_step": 1000 * seconds / steps, "peak_mib": peak}))
PY
  tail -n1 "$RESULTS"
}
if [ "$MODE" = gpu ]; then FT_TRAIN=3200 FT_SEQ=192; else FT_TRAIN=64 FT_SEQ=128; fi
finetune_step "shipped default" || exit 1
finetune_step "unpad" --set unpad=true || exit 1
if [ "$MODE" = gpu ]; then
  finetune_step "unpad, fused" --set unpad=true --set fused_elementwise=true || exit 1
fi
fi

echo
"$PYTHON" bench/gpu/levers_report.py "$RESULTS" "$OUT" | tee "$OUT/levers.md"
