# Sourced by bench/finetune/run.sh and qa.sh (with WORK and DEVICE set): runs a command
# with its output in WORK/NAME.log, its wall time and peak RSS in WORK/NAME.time and, on
# cuda, its peak GPU memory in WORK/NAME.gpu.
measure() { # name, command...: the log keeps its output; NAME.time the wall time in s and
  # the peak RSS in KB; NAME.gpu the peak GPU memory in MiB (cuda)
  local name=$1 smi=""
  shift
  echo "== $name" >&2
  if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$WORK/$name.smi" &
    smi=$!
  fi
  python3 - "$WORK/$name.time" "$@" > "$WORK/$name.log" 2>&1 <<'PY' || { tail "$WORK/$name.log"; exit 1; }
import resource, subprocess, sys, time
started = time.time()
rc = subprocess.call(sys.argv[2:])
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(sys.argv[1], "w").write(f"{time.time() - started:.2f} {peak_kb}\n")
sys.exit(rc)
PY
  if [ -n "$smi" ]; then
    kill "$smi" 2>/dev/null || true
    wait "$smi" 2>/dev/null || true
    sort -n "$WORK/$name.smi" | tail -1 > "$WORK/$name.gpu"
  fi
  tail -1 "$WORK/$name.log" >&2
}

