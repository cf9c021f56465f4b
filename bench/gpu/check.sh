#!/usr/bin/env bash
# The GPU correctness checks, in one run on a GPU machine (one GPU is enough), with the
# binaries staged by bench/gpu/stage.sh (stage/, or $BIOBERT_BIN) and python3 with torch
# 2.11 + transformers for the reference model:
#
#   BENCH_OUT=/path/for/results bench/gpu/check.sh
#   bench/gpu/check.sh --cpu        # every command on the CPU with tiny shapes: a check of
#                                   # this script before GPU time is spent on it
# BIOBERT_PYTHON names the python with torch and transformers (default python3).
#
# The checks, with the time each should take on an H100 (estimated from the CPU timings of
# the same commands and the model's FLOPs; about 4 minutes in all, start-up included):
#  1. biobert doctor (CUDA, the GPU, a bf16 matmul) and doctor --mpi on one rank (NCCL) and
#     under mpirun -np 2 (MPI, ranks sharing the GPU)                              ~25 s
#  2. embed: the bf16 forward of a BERT-base within 1e-2 relative error of fp32   ~30 s
#  3. the tiny config trains on the GPU (bf16), the loss falls                    ~15 s
#  4. NCCL with one rank gives the same losses as no all-reduce (1e-3: CUDA's atomics
#     make two runs differ in the last bits); bf16 reduction in 1 MiB buckets     ~30 s
#  5. two ranks sharing the GPU (MPI backend) match one rank with twice the batch ~25 s
#  6. NCCL forced with two ranks on one GPU: NCCL's own reason, the job ends      ~15 s
#  7. bench-allreduce: NCCL (one rank) and MPI (two ranks) on GPU buffers          ~30 s
#  8. BERT-base, seq 128: the bf16 loss (autocast-like, and with bf16_residual)
#     follows the fp32 loss over 200 steps (20-step means within 0.1)             ~35 s
#  9. BERT-base, seq 128, bf16, dropout off: packed batches (train.unpad, attention
#     through the variable-length flash kernel) give the padded run's losses (0.05) ~20 s
# 10. BERT-base, seq 128, bf16: the fused element-wise kernels (train.fused_elementwise)
#     pass their start-up check and give the unfused losses (dropout off 0.05; dropout on,
#     50 steps, 10-step means within 0.1)                                            ~60 s
# 11. BERT-base, seq 128, bf16, 2 micro-batches a step: the weights cast once per step
#     (train.cast_weights_once) give the per-use casts. losses (0.02)                ~40 s
# (with the doctor's three lines and the overlap check: 14 checks in the summary)
#
# Everything goes to $BENCH_OUT (default /tmp/biobert-gpu-check): each command's full log,
# and results.json (each check: passed or not, seconds, its numbers). The last lines
# printed are the summary; exit 1 when a check failed.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
MODE=gpu
[ "${1:-}" = --cpu ] && MODE=cpu
# shellcheck source=bench/gpu/binaries.sh
source bench/gpu/binaries.sh
OUT=${BENCH_OUT:-/tmp/biobert-gpu-check}
WORK=$OUT/work
rm -rf "$WORK" && mkdir -p "$WORK"
: > "$OUT/results.jsonl"
# shellcheck source=launch/env.sh
source launch/env.sh || exit 1
# The python with torch and transformers (the GPU machine's python3).
PYTHON=${BIOBERT_PYTHON:-python3}
HAS_TORCH=1
"$PYTHON" -c "import torch, transformers" 2>/dev/null || HAS_TORCH=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN=(mpirun --bind-to none --oversubscribe -np 2)

if [ "$MODE" = gpu ]; then
  DEVICE=cuda NCCL=nccl ABSTRACTS=600 BASE_STEPS=200 TINY_STEPS=100 STEPS=30
  BASE=(--config configs/biobert_base.toml --set model.init=scratch --set train.micro_batch_size=32)
  MODEL_SHAPE=()
  [ "$HAS_TORCH" = 1 ] || { echo "check.sh: $PYTHON cannot import torch and transformers (set BIOBERT_PYTHON)"; exit 1; }
else
  # The same commands on the CPU: NCCL needs a GPU, so the MPI backend stands in for it.
  DEVICE=cpu NCCL=mpi ABSTRACTS=120 BASE_STEPS=6 TINY_STEPS=100 STEPS=6
  BASE=(--config configs/tiny.toml --set train.micro_batch_size=8)
  MODEL_SHAPE=(--hidden 64 --layers 2 --heads 4 --intermediate 128)
  # Without an importable torch here, the python scripts check their arguments only.
  [ "$HAS_TORCH" = 1 ] || MODEL_SHAPE+=(--dry-run)
fi
echo "check.sh: $MODE mode; binaries from $BIN; results in $OUT"

RESULTS=()
check() { # NAME CMD...: runs CMD with its output in $OUT/NAME.log, records the outcome
  local name=$1
  shift
  local log="$OUT/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_' | cut -c1-60).log"
  echo
  echo "=== $name"
  local started=$SECONDS rc=0
  "$@" > "$log" 2>&1 || rc=$?
  local seconds=$((SECONDS - started))
  grep -aE "^(  |step|ok|FAILED|exit|loss|layer|[0-9]+ logged|gradient all-reduce|all-reduce|gradients|doctor|cuda|  cuda|problem|error|rank|ncclCommInitRank|unpad)" "$log" | grep -v "^  step" | tail -8
  local status=passed
  [ $rc -eq 0 ] || status=failed
  RESULTS+=("$(printf '%-7s %4s s  %s' "$status" "$seconds" "$name")")
  "$PYTHON" - "$name" "$status" "$seconds" "$log" >> "$OUT/results.jsonl" <<'PY'
import json, sys
name, status, seconds, log = sys.argv[1:5]
lines = open(log, errors="replace").read().splitlines()
numbers = [l for l in lines if any(k in l for k in ("diff", "error", "loss", "GB/s", "exit", "ok"))]
print(json.dumps({"check": name, "status": status, "seconds": int(seconds), "log": log, "lines": numbers[-12:]}))
PY
}
TINY=(--config configs/tiny.toml --data "$WORK/corpus" --set model.hidden_dropout_prob=0.0
  --set model.attention_probs_dropout_prob=0.0 --set log.every=5 --set log.eval_every=0
  --set checkpoint.every=0 --set checkpoint.at_end=false --device "$DEVICE")

"$PYTHON" bench/gpu/make_corpus.py "$WORK" "$ABSTRACTS" > /dev/null
"$BIN/corpus-tools" prepare --pubmed "$WORK/pubmed" --vocab "$WORK/vocab.txt" --cased \
  --out "$WORK/corpus" --threads "$(nproc)" > "$OUT/prepare.log" 2>&1 || { tail "$OUT/prepare.log"; exit 1; }

check "biobert doctor" "$BIN/biobert" doctor
check "biobert doctor --mpi: the gradient all-reduce, one rank ($NCCL)" "$BIN/biobert" doctor --mpi
check "mpirun -np 2 biobert doctor --mpi: two ranks sharing the GPU (MPI)" "${MPIRUN[@]}" "$BIN/biobert" doctor --mpi

bf16_forward() {
  local model=$WORK/bert
  "$PYTHON" bench/gpu/make_model.py "$model" "$WORK/vocab.txt" "${MODEL_SHAPE[@]}" || return 1
  # (CPU mode without torch in python: the committed tiny BERT stands in)
  [ -d "$model" ] || model=$ROOT/tests/fixtures/tiny_bert
  grep -o "<AbstractText>[^<]*" "$WORK/pubmed/synthetic0001.xml" | head -16 | cut -c15-600 > "$WORK/sentences.txt"
  for p in fp32 bf16; do
    "$BIN/biobert" embed --model "$model" --input "$WORK/sentences.txt" \
      --output "$WORK/$p.safetensors" --device "$DEVICE" --precision $p --max-seq-len 128 || return 1
  done
  "$PYTHON" bench/gpu/compare.py features "$WORK/bf16.safetensors" "$WORK/fp32.safetensors"
}
check "embed: bf16 forward within 1e-2 of fp32 (BERT-base)" bf16_forward

tiny_trains() {
  "$BIN/biobert" pretrain "${TINY[@]}" --out "$WORK/tiny" --max-steps "$TINY_STEPS" --set train.precision=bf16 || return 1
  "$PYTHON" - "$WORK/tiny/log.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first, last = rows[0]["train/loss"], rows[-1]["train/loss"]
print(f"loss {first:.3f} -> {last:.3f}")
sys.exit(0 if last < first - 0.5 else 1)
PY
}
check "tiny config trains in bf16: the loss falls" tiny_trains

nccl_one_rank() {
  for backend in auto "$NCCL"; do
    "$BIN/biobert" pretrain "${TINY[@]}" --out "$WORK/one-$backend-1" --max-steps "$STEPS" \
      --set train.precision=fp32 --set distributed.backend="$backend" || return 1
  done
  "$PYTHON" bench/gpu/compare.py losses "$WORK/one-auto-1" "$WORK/one-$NCCL-1" 1e-3 || return 1
  "$BIN/biobert" pretrain "${TINY[@]}" --out "$WORK/one-bf16" --max-steps "$STEPS" \
    --set train.precision=fp32 --set distributed.backend="$NCCL" --set distributed.reduce_dtype=bf16 \
    --set distributed.bucket_mb=1 || return 1
  "$PYTHON" bench/gpu/compare.py losses "$WORK/one-auto-1" "$WORK/one-bf16" 0.05
}
check "$NCCL, one rank: the losses of no all-reduce; bf16 sums in 1 MiB buckets" nccl_one_rank

# The sums overlapped with the backward pass equal the sums after it: on a GPU with one
# rank and NCCL forced (fp32 sums, then bf16 through its copy), on the CPU with two MPI
# ranks. Four layers of 128 in 1 MiB buckets and two micro-batches per step, so that most
# buckets start from the hooks, which the run says.
overlap_equal() {
  local shape=(--set model.hidden_size=128 --set model.num_hidden_layers=4
    --set model.intermediate_size=512 --set train.grad_accumulation=2
    --set distributed.bucket_mb=1 --set train.precision=fp32)
  local launch=("$BIN/biobert") backend=nccl
  if [ "$DEVICE" = cpu ]; then launch=("${MPIRUN[@]}" "$BIN/biobert") backend=auto; fi
  for overlap in false true; do
    "${launch[@]}" pretrain "${TINY[@]}" "${shape[@]}" --out "$WORK/overlap-$overlap" --max-steps "$STEPS" \
      --set distributed.backend=$backend --set distributed.overlap=$overlap >"$WORK/overlap-$overlap.txt" || return 1
  done
  grep -E "^overlap: " "$WORK/overlap-true.txt"
  grep -qE "^overlap: step 1 started ([1-9][0-9]*) of" "$WORK/overlap-true.txt" || return 1
  "$PYTHON" bench/gpu/compare.py losses "$WORK/overlap-false" "$WORK/overlap-true" 1e-6 || return 1
  [ "$DEVICE" = cpu ] && return 0
  "${launch[@]}" pretrain "${TINY[@]}" "${shape[@]}" --out "$WORK/overlap-bf16" --max-steps "$STEPS" \
    --set distributed.backend=$backend --set distributed.overlap=true --set distributed.reduce_dtype=bf16 || return 1
  "$PYTHON" bench/gpu/compare.py losses "$WORK/overlap-false" "$WORK/overlap-bf16" 0.05
}
check "all-reduce overlapped with backward = after it (losses; bf16 sums within 0.05)" overlap_equal

two_ranks_share() {
  "$BIN/biobert" pretrain "${TINY[@]}" --out "$WORK/b16" --max-steps "$STEPS" --set train.precision=fp32 \
    --set train.micro_batch_size=16 || return 1
  "${MPIRUN[@]}" "$BIN/biobert" pretrain "${TINY[@]}" --out "$WORK/2x8" --max-steps "$STEPS" \
    --set train.precision=fp32 --set train.micro_batch_size=8 || return 1
  "$PYTHON" bench/gpu/compare.py losses "$WORK/b16" "$WORK/2x8" 1e-3
}
check "2 ranks x 8 sharing the device (MPI) = 1 rank x 16" two_ranks_share

nccl_refuses_shared_gpu() {
  local started=$SECONDS rc=0
  timeout 180 "${MPIRUN[@]}" "$BIN/biobert" pretrain "${TINY[@]}" --out "$WORK/2nccl" --max-steps 6 \
    --set distributed.backend=nccl || rc=$?
  echo "exit $rc after $((SECONDS - started)) s"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]
}
check "nccl forced with 2 ranks on 1 device: a clear error, no hang" nccl_refuses_shared_gpu

allreduce_bandwidth() {
  "$BIN/biobert" bench-allreduce --device "$DEVICE" --backend "$NCCL" --max-bytes $((1 << 28)) &&
    "$BIN/biobert" bench-allreduce --device "$DEVICE" --backend "$NCCL" --reduce-dtype bf16 --max-bytes $((1 << 28)) &&
    "${MPIRUN[@]}" "$BIN/biobert" bench-allreduce --device "$DEVICE" --max-bytes $((1 << 26))
}
check "bench-allreduce ($NCCL one rank, MPI two ranks)" allreduce_bandwidth

bf16_follows_fp32() {
  for p in fp32 bf16 bf16r; do
    "$BIN/biobert" pretrain "${BASE[@]}" --data "$WORK/corpus" --device "$DEVICE" \
      --out "$WORK/base-$p" --max-steps "$BASE_STEPS" --set data.max_seq_len=128 \
      --set data.max_predictions_per_seq=20 --set train.precision=${p:0:4} \
      --set train.bf16_residual=$([ $p = bf16r ] && echo true || echo false) \
      --set train.warmup_steps=$((BASE_STEPS < 20 ? BASE_STEPS : 20)) --set train.learning_rate=1e-4 --set log.every=20 \
      --set log.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false || return 1
  done
  "$PYTHON" bench/gpu/compare.py losses "$WORK/base-fp32" "$WORK/base-bf16" 0.1 &&
    "$PYTHON" bench/gpu/compare.py losses "$WORK/base-fp32" "$WORK/base-bf16r" 0.1
}
check "BERT-base seq 128: bf16 (and bf16 residual) follow fp32 (20-step means within 0.1)" bf16_follows_fp32

unpad_matches_padded() {
  for u in false true; do
    "$BIN/biobert" pretrain "${BASE[@]}" --data "$WORK/corpus" --device "$DEVICE" \
      --out "$WORK/unpad-$u" --max-steps "$STEPS" --set data.max_seq_len=128 \
      --set data.max_predictions_per_seq=20 --set train.precision=bf16 --set train.bf16_residual=true \
      --set train.unpad=$u --set model.hidden_dropout_prob=0.0 --set model.attention_probs_dropout_prob=0.0 \
      --set train.warmup_steps=$((STEPS < 10 ? STEPS : 10)) --set train.learning_rate=1e-4 --set log.every=5 \
      --set log.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false | tee "$WORK/unpad-$u.out" || return 1
  done
  # On a GPU the packed attention must be the flash kernel's, not the padded fallback.
  if [ "$MODE" = gpu ]; then
    grep -q "^unpad: .*through the variable-length flash kernel" "$WORK/unpad-true.out" || return 1
  fi
  "$PYTHON" bench/gpu/compare.py losses "$WORK/unpad-false" "$WORK/unpad-true" 0.05
}
check "BERT-base seq 128, bf16, dropout off: packed batches (train.unpad) = padded" unpad_matches_padded

# The fused element-wise kernels (train.fused_elementwise): on a GPU, BERT-base in bf16 with
# a bf16 residual stream, the run's start-up self-check passes (the line says so), the
# losses equal the unfused run's with dropout off (0.05, as packed = padded), and with
# dropout on (other masks: the kernels draw from Philox) their 10-step means stay within
# 0.1 over 50 steps. On the CPU the setting is refused in one line.
fused_matches_unfused() {
  if [ "$MODE" = cpu ]; then
    ! "$BIN/biobert" pretrain "${TINY[@]}" --out "$WORK/fused-cpu" --max-steps 6 \
      --set train.fused_elementwise=true 2> "$WORK/fused-cpu.err" || return 1
    cat "$WORK/fused-cpu.err"
    grep -q "^error: train.fused_elementwise: the fused kernels need a CUDA device" "$WORK/fused-cpu.err"
    return
  fi
  local dropout
  for dropout in 0.0 0.1; do
    local steps=$STEPS every=5 tolerance=0.05
    [ "$dropout" = 0.0 ] || { steps=50; every=10; tolerance=0.1; }
    for f in false true; do
      "$BIN/biobert" pretrain "${BASE[@]}" --data "$WORK/corpus" --device "$DEVICE" \
        --out "$WORK/fused-$dropout-$f" --max-steps "$steps" --set data.max_seq_len=128 \
        --set data.max_predictions_per_seq=20 --set train.precision=bf16 --set train.bf16_residual=true \
        --set train.fused_elementwise=$f --set model.hidden_dropout_prob=$dropout \
        --set model.attention_probs_dropout_prob=$dropout --set train.warmup_steps=10 \
        --set train.learning_rate=1e-4 --set log.every=$every --set log.eval_every=0 \
        --set checkpoint.every=0 --set checkpoint.at_end=false | tee "$WORK/fused-$dropout-$f.out" || return 1
    done
    grep "^fused element-wise kernels: .*checked on the GPU" "$WORK/fused-$dropout-true.out" || return 1
    "$PYTHON" bench/gpu/compare.py losses "$WORK/fused-$dropout-false" "$WORK/fused-$dropout-true" "$tolerance" || return 1
  done
}
check "BERT-base seq 128, bf16: fused element-wise kernels = unfused (dropout off 0.05; on, 10-step means 0.1)" fused_matches_unfused

# The weights cast once per optimizer step (train.cast_weights_once): BERT-base in bf16 (the
# tiny model on the CPU) with 2 micro-batches a step, the same dropout draws: the losses of
# the per-use casts within 0.02 (the same arithmetic; the word embeddings' two gradients are
# added in another order, and a GPU's sums differ run to run in the last bits anyway).
cast_once_matches_per_use() {
  local once
  for once in false true; do
    "$BIN/biobert" pretrain "${BASE[@]}" --data "$WORK/corpus" --device "$DEVICE" \
      --out "$WORK/once-$once" --max-steps "$STEPS" --set data.max_seq_len=128 \
      --set data.max_predictions_per_seq=20 --set train.precision=bf16 \
      --set train.grad_accumulation=2 --set train.cast_weights_once=$once \
      --set train.warmup_steps=2 --set train.learning_rate=1e-4 --set log.every=$((STEPS < 10 ? 1 : 5)) \
      --set log.eval_every=0 --set checkpoint.every=0 --set checkpoint.at_end=false \
      | tee "$WORK/once-$once.out" || return 1
  done
  grep "^cast weights once: " "$WORK/once-true.out" || return 1
  "$PYTHON" bench/gpu/compare.py losses "$WORK/once-false" "$WORK/once-true" 0.02
}
check "BERT-base seq 128, bf16, 2 micro-batches: weights cast once = per-use casts (0.02)" cast_once_matches_per_use

echo
echo "=== summary ($MODE mode, $(date -u +%FT%TZ), results in $OUT/results.jsonl)"
printf '%s\n' "${RESULTS[@]}"
! printf '%s\n' "${RESULTS[@]}" | grep -q '^failed'
