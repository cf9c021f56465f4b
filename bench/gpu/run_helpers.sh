# Sourced by bench/gpu/throughput.sh and levers.sh (after binaries.sh, with OUT, WORK,
# PYTHON and BIN set): the synthetic corpus and the GPU's peak memory around a command.

# synthetic_corpus ABSTRACTS: prepares (once per results folder) a corpus of that many
# synthetic abstracts (bench/gpu/make_corpus.py) and sets CORPUS to it.
synthetic_corpus() {
  local n=$1
  if [ ! -f "$WORK/corpus-$n/manifest.json" ]; then
    "$PYTHON" bench/gpu/make_corpus.py "$WORK/src-$n" "$n" > /dev/null || return 1
    "$BIN/corpus-tools" prepare --pubmed "$WORK/src-$n/pubmed" --vocab "$WORK/src-$n/vocab.txt" \
      --cased --out "$WORK/corpus-$n" --threads "$(nproc)" > "$OUT/prepare.log" 2>&1 ||
      { tail "$OUT/prepare.log"; return 1; }
  fi
  CORPUS=$WORK/corpus-$n
}

# peak_memory LOG CMD...: runs CMD (output to LOG) while sampling the GPU's used memory
# every 100 ms; writes the peak in MiB ("n/a" without nvidia-smi) to $WORK/peak.
peak_memory() {
  local log=$1 smi="" rc=0
  shift
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$WORK/smi.log" &
    smi=$!
  fi
  "$@" > "$log" 2>&1 || rc=$?
  if [ -n "$smi" ]; then
    kill "$smi" 2>/dev/null || true
    wait "$smi" 2>/dev/null || true
    sort -n "$WORK/smi.log" | tail -1 > "$WORK/peak"
  else
    echo n/a > "$WORK/peak"
  fi
  return $rc
}

# host_line MODE: results.jsonl's first line, the GPU's name and driver (or none).
host_line() {
  local gpu
  gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n1)
  "$PYTHON" -c 'import json, sys; print(json.dumps({"name": "host", "gpu": sys.argv[1], "mode": sys.argv[2]}))' \
    "${gpu:-none ($1 mode)}" "$1"
}
