#!/usr/bin/env bash
# GPU training throughput: our trainer's step loop against the Hugging Face baseline
# (bench/gpu/hf_baseline.py, eager and torch.compile), BERT-base (bert-base-cased shape),
# bf16, at seq 128 x batch 256 and seq 512 x batch 32, in one run on one GPU.
#
#   bench/gpu/throughput.sh [STEPS]        (default 60 timed-and-logged steps per run)
#   SHAPES="128 256 20" bench/gpu/throughput.sh    (one shape: "SEQ BATCH PREDICTIONS";
#                                                   ';' between several)
#
# Needs: a GPU machine with python3 + torch 2.11 + transformers, and the release binaries
# (cargo build --release --workspace) in target/release or $BIOBERT_BIN. The corpus is
# synthetic PubMed XML (bench/gpu/make_corpus.py) taken through `corpus-tools prepare`, so
# the data path is the real one. Prints one table (bench/gpu/report.py).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
STEPS=${1:-60}
BIN=${BIOBERT_BIN:-$ROOT/target/release}
WORK=${BENCH_WORK:-/tmp/biobert-bench-gpu}
RESULTS=${BENCH_RESULTS:-$WORK/results.jsonl}
# shellcheck source=launch/env.sh
source launch/env.sh >/dev/null
mkdir -p "$WORK"
: > "$RESULTS"

if [ ! -f "$WORK/corpus/manifest.json" ]; then
  python3 bench/gpu/make_corpus.py "$WORK" 1500
  "$BIN/corpus-tools" prepare --pubmed "$WORK/pubmed" --vocab "$WORK/vocab.txt" --cased \
    --out "$WORK/corpus" --threads "$(nproc)"
fi

# peak_memory CMD...: runs CMD while sampling the GPU's used memory; appends "MiB" to $WORK/peak.
peak_memory() {
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$WORK/smi.log" &
  local smi=$!
  local rc=0
  "$@" || rc=$?
  kill "$smi" 2>/dev/null || true
  wait "$smi" 2>/dev/null || true
  sort -n "$WORK/smi.log" | tail -1 > "$WORK/peak"
  return $rc
}

IFS=';' read -r -a SHAPE_LIST <<< "${SHAPES:-128 256 20;512 32 80}"
for shape in "${SHAPE_LIST[@]}"; do
  read -r SEQ BATCH PRED <<< "$shape"
  RUN=$WORK/run-$SEQ
  rm -rf "$RUN"
  echo "== the data loader alone (pinned batches): seq $SEQ batch $BATCH" >&2
  "$BIN/biobert" bench-loader --config configs/biobert_base.toml --data "$WORK/corpus" \
    --set model.init=scratch --set data.max_seq_len="$SEQ" --set data.max_predictions_per_seq="$PRED" \
    --set train.micro_batch_size="$BATCH" --steps "$STEPS" --device cuda >&2
  for RESIDUAL in false true; do
    NAME=biobert
    [ "$RESIDUAL" = true ] && NAME="biobert (bf16 residual)"
    echo "== $NAME pretrain: seq $SEQ batch $BATCH, $STEPS steps" >&2
    rm -rf "$RUN"
    peak_memory "$BIN/biobert" pretrain --config configs/biobert_base.toml --data "$WORK/corpus" \
      --out "$RUN" --max-steps "$STEPS" --set model.init=scratch --set data.max_seq_len="$SEQ" \
      --set data.max_predictions_per_seq="$PRED" --set train.micro_batch_size="$BATCH" \
      --set train.precision=bf16 --set train.bf16_residual="$RESIDUAL" --set train.warmup_steps=10 \
      --set train.learning_rate=1e-4 --set log.every=10 --set log.eval_every=0 \
      --set checkpoint.every=0 > "$RUN.log" 2>&1 || { tail -20 "$RUN.log" >&2; exit 1; }
    grep -E "^step " "$RUN.log" | tail -2 >&2
    python3 bench/gpu/report.py ours "$RUN/log.jsonl" "$SEQ" "$BATCH" "$(cat "$WORK/peak")" "$NAME" >> "$RESULTS"
  done
  for mode in "" "--compile"; do
    echo "== HF ${mode:-eager}: seq $SEQ batch $BATCH" >&2
    peak_memory python3 bench/gpu/hf_baseline.py --seq "$SEQ" --batch "$BATCH" \
      --predictions "$PRED" --steps "$STEPS" $mode > "$WORK/hf.json"
    python3 bench/gpu/report.py hf "$WORK/hf.json" "$SEQ" "$BATCH" "$(cat "$WORK/peak")" >> "$RESULTS"
  done
done
python3 bench/gpu/report.py table "$RESULTS"
