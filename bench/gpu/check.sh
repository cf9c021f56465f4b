#!/usr/bin/env bash
# The GPU checks, in one run on a GPU machine (one GPU is enough), with the release binaries
# built elsewhere (cargo build --release --workspace) in target/release or $BIOBERT_BIN, and
# python3 with torch 2.11 + transformers for the reference model:
#
#   bench/gpu/check.sh
#
# 1. biobert doctor (CUDA, the GPU, a bf16 matmul) and doctor --mpi under mpirun -np 2;
# 2. embed: the bf16 forward of a BERT-base within 1e-2 relative error of fp32;
# 3. the tiny config trains on the GPU (bf16), the loss falls;
# 4. NCCL with one rank gives the same losses as no all-reduce; bf16 reduction runs;
# 5. two ranks sharing the GPU (MPI backend) match one rank with twice the batch;
#    (tolerance 1e-3: CUDA's atomics in the embedding, gather and attention backward make
#    two runs differ in the last bits; the printed differences are the measurement)
#    NCCL refuses two ranks on one GPU with its own message, and the job ends;
# 6. bench-allreduce: NCCL (one rank) and MPI (two ranks) on GPU buffers;
# 7. BERT-base, seq 128: the bf16 loss (autocast-like, and with train.bf16_residual)
#    follows the fp32 loss over 200 steps.
# Ends with a summary; exit 1 when a check failed.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BIN=${BIOBERT_BIN:-$ROOT/target/release}
WORK=${CHECK_WORK:-/tmp/biobert-check}
rm -rf "$WORK" && mkdir -p "$WORK"
# shellcheck source=launch/env.sh
source launch/env.sh >/dev/null
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
RESULTS=()
check() { # NAME CMD...: runs CMD, records the outcome
  local name=$1
  shift
  echo
  echo "=== $name"
  local started=$SECONDS
  if "$@"; then RESULTS+=("ok      $name ($((SECONDS - started)) s)"); else RESULTS+=("FAILED  $name"); fi
}
tail_steps() { grep -E "^(step|gradient all-reduce|ranks)" "$1" | tail -${2:-4}; }

python3 bench/gpu/make_corpus.py "$WORK" 600 > /dev/null
"$BIN/corpus-tools" prepare --pubmed "$WORK/pubmed" --vocab "$WORK/vocab.txt" --cased \
  --out "$WORK/corpus" --threads "$(nproc)" | tail -1
TINY=(--config configs/tiny.toml --data "$WORK/corpus" --set model.hidden_dropout_prob=0.0
  --set model.attention_probs_dropout_prob=0.0 --set log.every=5 --set log.eval_every=0
  --set checkpoint.every=0)

check "biobert doctor" "$BIN/biobert" doctor
check "biobert doctor --mpi: NCCL sums 16 MiB on the GPU (one rank)" "$BIN/biobert" doctor --mpi
check "mpirun -np 2 biobert doctor --mpi: two ranks sharing the GPU (MPI)" mpirun -np 2 "$BIN/biobert" doctor --mpi

bf16_forward() {
  python3 bench/gpu/make_model.py "$WORK/bert-base" "$WORK/vocab.txt" || return 1
  grep -o "<AbstractText>[^<]*" "$WORK/pubmed/synthetic0001.xml" | head -16 | cut -c15-600 > "$WORK/sentences.txt"
  for p in fp32 bf16; do
    "$BIN/biobert" embed --model "$WORK/bert-base" --input "$WORK/sentences.txt" \
      --output "$WORK/$p.safetensors" --device cuda --precision $p --max-seq-len 128 || return 1
  done
  python3 bench/gpu/compare.py features "$WORK/bf16.safetensors" "$WORK/fp32.safetensors"
}
check "embed: bf16 forward within 1e-2 of fp32 (BERT-base, cuda)" bf16_forward

tiny_gpu() {
  "$BIN/biobert" pretrain "${TINY[@]}" --out "$WORK/tiny" --max-steps 100 \
    --set train.precision=auto > "$WORK/tiny.log" 2>&1 || { tail "$WORK/tiny.log"; return 1; }
  tail_steps "$WORK/tiny.log" 3
  python3 - "$WORK/tiny/log.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first, last = rows[0]["train/loss"], rows[-1]["train/loss"]
print(f"loss {first:.3f} -> {last:.3f}")
sys.exit(0 if last < first - 0.5 else 1)
PY
}
check "tiny config on the GPU (bf16): the loss falls" tiny_gpu

nccl_one_rank() {
  for backend in auto nccl; do
    "$BIN/biobert" pretrain "${TINY[@]}" --out "$WORK/one-$backend" --max-steps 30 \
      --set train.precision=fp32 --set distributed.backend=$backend > "$WORK/one-$backend.log" 2>&1 \
      || { tail "$WORK/one-$backend.log"; return 1; }
    tail_steps "$WORK/one-$backend.log" 2
  done
  python3 bench/gpu/compare.py losses "$WORK/one-auto" "$WORK/one-nccl" 1e-3
}
check "NCCL, one rank: the same losses as no all-reduce" nccl_one_rank

nccl_bf16() {
  "$BIN/biobert" pretrain "${TINY[@]}" --out "$WORK/one-nccl-bf16" --max-steps 30 \
    --set train.precision=fp32 --set distributed.backend=nccl --set distributed.reduce_dtype=bf16 \
    --set distributed.bucket_mb=1 > "$WORK/one-nccl-bf16.log" 2>&1 || { tail "$WORK/one-nccl-bf16.log"; return 1; }
  python3 bench/gpu/compare.py losses "$WORK/one-auto" "$WORK/one-nccl-bf16" 0.05
}
check "NCCL, one rank, bf16 reduction in 1 MiB buckets" nccl_bf16

two_ranks_share_gpu() {
  "$BIN/biobert" pretrain "${TINY[@]}" --out "$WORK/b16" --max-steps 30 --set train.precision=fp32 \
    --set train.micro_batch_size=16 > "$WORK/b16.log" 2>&1 || { tail "$WORK/b16.log"; return 1; }
  mpirun -np 2 "$BIN/biobert" pretrain "${TINY[@]}" --out "$WORK/2x8" --max-steps 30 \
    --set train.precision=fp32 --set train.micro_batch_size=8 > "$WORK/2x8.log" 2>&1 \
    || { tail "$WORK/2x8.log"; return 1; }
  tail_steps "$WORK/2x8.log" 3
  python3 bench/gpu/compare.py losses "$WORK/b16" "$WORK/2x8" 1e-3
}
check "2 ranks x 8 sharing the GPU (MPI) = 1 rank x 16" two_ranks_share_gpu

nccl_refuses_shared_gpu() {
  local started=$SECONDS rc=0
  timeout 180 mpirun -np 2 "$BIN/biobert" pretrain "${TINY[@]}" --out "$WORK/2nccl" --max-steps 5 \
    --set distributed.backend=nccl > "$WORK/2nccl.log" 2>&1 || rc=$?
  grep -iE "error|nccl" "$WORK/2nccl.log" | head -5
  echo "exit $rc after $((SECONDS - started)) s"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]
}
check "NCCL forced with 2 ranks on 1 GPU: a clear error, no hang" nccl_refuses_shared_gpu

allreduce_bandwidth() {
  "$BIN/biobert" bench-allreduce --device cuda --backend nccl --max-bytes $((1 << 30)) &&
  "$BIN/biobert" bench-allreduce --device cuda --backend nccl --reduce-dtype bf16 --max-bytes $((1 << 30)) &&
  mpirun -np 2 "$BIN/biobert" bench-allreduce --device cuda --max-bytes $((1 << 28))
}
check "bench-allreduce on GPU buffers" allreduce_bandwidth

bf16_follows_fp32() {
  for p in fp32 bf16 bf16r; do
    "$BIN/biobert" pretrain --config configs/biobert_base.toml --data "$WORK/corpus" \
      --out "$WORK/base-$p" --max-steps 200 --set model.init=scratch --set data.max_seq_len=128 \
      --set data.max_predictions_per_seq=20 --set train.micro_batch_size=32 \
      --set train.precision=${p:0:4} --set train.bf16_residual=$([ $p = bf16r ] && echo true || echo false) \
      --set train.warmup_steps=20 --set train.learning_rate=1e-4 \
      --set log.every=20 --set log.eval_every=0 --set checkpoint.every=0 > "$WORK/base-$p.log" 2>&1 \
      || { tail "$WORK/base-$p.log"; return 1; }
    tail_steps "$WORK/base-$p.log" 2
  done
  python3 bench/gpu/compare.py losses "$WORK/base-fp32" "$WORK/base-bf16" 0.1 &&
  python3 bench/gpu/compare.py losses "$WORK/base-fp32" "$WORK/base-bf16r" 0.1
}
check "BERT-base seq 128: bf16 (and bf16 residual) loss follows fp32 over 200 steps (20-step means within 0.1)" bf16_follows_fp32

echo
echo "=== summary"
printf '%s\n' "${RESULTS[@]}"
! printf '%s\n' "${RESULTS[@]}" | grep -q '^FAILED'
