#!/usr/bin/env bash
# GPU training throughput: our trainer's step loop against the Hugging Face baseline
# (bench/gpu/hf_baseline.py, eager and torch.compile), BERT-base (bert-base-cased shape),
# bf16, in one run on one GPU, with the binaries of bench/gpu/stage.sh (stage/, or
# $BIOBERT_BIN) and python3 with torch 2.11 + transformers (BIOBERT_PYTHON names another).
#
#   BENCH_OUT=/path/for/results bench/gpu/throughput.sh           # seq 128 x 256, then 512 x 32
#   SHAPES="512 32 80" STEPS=40 bench/gpu/throughput.sh           # one shape: "SEQ BATCH PREDICTIONS"
#   bench/gpu/throughput.sh --cpu        # every command on the CPU with tiny shapes: a check
#                                        # of this script before GPU time is spent on it
#
# Expected time on an H100 (estimated): ~30 s for the corpus, then per shape ~2.5 min: the
# loader alone ~10 s, our two runs ~25 s each (start-up, data, 40 steps), HF eager ~25 s,
# HF compiled ~60-90 s (compilation). Seq 128 comes first, so a cut-off run still has it.
#
# Everything goes to $BENCH_OUT (default /tmp/biobert-gpu-throughput): each run's log,
# results.jsonl (one line per run) and table.md. The Hugging Face runs may fail without
# stopping the script (their row says so); the table is always the last thing printed.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
MODE=gpu
[ "${1:-}" = --cpu ] && MODE=cpu
# shellcheck source=bench/gpu/binaries.sh
source bench/gpu/binaries.sh
OUT=${BENCH_OUT:-/tmp/biobert-gpu-throughput}
WORK=$OUT/work
mkdir -p "$WORK"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
# shellcheck source=launch/env.sh
source launch/env.sh || exit 1
PYTHON=${BIOBERT_PYTHON:-python3}
HF_SHAPE=()
if [ "$MODE" = gpu ]; then
  DEVICE=cuda STEPS=${STEPS:-40} ABSTRACTS=1500 SHAPES=${SHAPES:-128 256 20;512 32 80}
  MODEL=(--config configs/biobert_base.toml --set model.init=scratch)
else
  DEVICE=cpu STEPS=${STEPS:-4} ABSTRACTS=120 SHAPES=${SHAPES:-64 8 10;128 4 20}
  MODEL=(--config configs/tiny.toml)
  HF_SHAPE=(--device cpu --hidden 64 --layers 2 --heads 4 --intermediate 128)
  "$PYTHON" -c "import torch, transformers" 2>/dev/null || HF_SHAPE+=(--dry-run)
fi
echo "throughput.sh: $MODE mode; binaries from $BIN; $STEPS steps per run; results in $OUT"

# shellcheck source=bench/gpu/run_helpers.sh
source bench/gpu/run_helpers.sh
synthetic_corpus "$ABSTRACTS" || exit 1
host_line "$MODE" >> "$RESULTS"

IFS=';' read -r -a SHAPE_LIST <<< "$SHAPES"
for shape in "${SHAPE_LIST[@]}"; do
  read -r SEQ BATCH PRED <<< "$shape"
  SET=(--set data.max_seq_len="$SEQ" --set data.max_predictions_per_seq="$PRED"
    --set train.micro_batch_size="$BATCH")
  echo "== seq $SEQ x batch $BATCH: the data loader alone"
  "$BIN/biobert" bench-loader "${MODEL[@]}" --data "$CORPUS" "${SET[@]}" --steps $((STEPS * 5)) \
    --device "$DEVICE" --index-cache "$WORK/instance_index" > "$OUT/loader-$SEQ.log" 2>&1 ||
    { tail "$OUT/loader-$SEQ.log"; exit 1; }
  grep -E "seq/s|^padding:" "$OUT/loader-$SEQ.log"
  for VARIANT in plain residual unpad; do
    NAME=biobert RESIDUAL=false UNPAD=false
    [ "$VARIANT" != plain ] && NAME="biobert (bf16 residual)" RESIDUAL=true
    [ "$VARIANT" = unpad ] && NAME="biobert (bf16 residual, unpad)" UNPAD=true
    RUN=$WORK/run-$SEQ-$VARIANT
    rm -rf "$RUN"
    echo "== seq $SEQ x batch $BATCH: $NAME, $STEPS steps"
    peak_memory "$RUN.log" "$BIN/biobert" pretrain "${MODEL[@]}" --data "$CORPUS" --out "$RUN" \
      --device "$DEVICE" --max-steps "$STEPS" "${SET[@]}" --set train.precision=bf16 \
      --set train.bf16_residual="$RESIDUAL" --set train.unpad="$UNPAD" --set train.warmup_steps=$((STEPS < 10 ? STEPS : 10)) --set train.learning_rate=1e-4 \
      --set log.every=10 --set log.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false ||
      { tail -20 "$RUN.log"; exit 1; }
    cp "$RUN.log" "$OUT/"
    grep -E "^unpad: " "$RUN.log" || true
    grep -E "^step " "$RUN.log" | tail -1
    "$PYTHON" bench/gpu/report.py ours "$RUN/log.jsonl" "$SEQ" "$BATCH" "$(cat "$WORK/peak")" "$NAME" >> "$RESULTS"
  done
  for mode in eager compiled; do
    flag=()
    [ $mode = compiled ] && flag=(--compile)
    log=$OUT/hf-$mode-$SEQ.log
    echo "== seq $SEQ x batch $BATCH: HF $mode, $STEPS steps"
    if peak_memory "$log" "$PYTHON" bench/gpu/hf_baseline.py --seq "$SEQ" --batch "$BATCH" \
      --predictions "$PRED" --steps "$STEPS" "${flag[@]}" "${HF_SHAPE[@]}"; then
      tail -1 "$log" | cut -c1-200
      "$PYTHON" bench/gpu/report.py hf "$log" "$SEQ" "$BATCH" "$(cat "$WORK/peak")" >> "$RESULTS" ||
        echo "{\"name\": \"HF $mode\", \"seq\": $SEQ, \"batch\": $BATCH, \"failed\": \"no result line (dry run?)\"}" >> "$RESULTS"
    else
      echo "HF $mode failed (not fatal): $(tail -1 "$log" | cut -c1-200)"
      echo "{\"name\": \"HF $mode\", \"seq\": $SEQ, \"batch\": $BATCH, \"failed\": \"exit code, see $log\"}" >> "$RESULTS"
    fi
  done
done
echo
"$PYTHON" bench/gpu/report.py table "$RESULTS" | tee "$OUT/table.md"
