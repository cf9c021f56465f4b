#!/usr/bin/env bash
# launch/slurm.sbatch under a real single-node Slurm (tests/slurm/cluster.sh), as the
# README gives it, with a CPU-sized request:
#
#   1. a run submitted with sbatch finishes and logs every step;
#   2. the same run, requeued with `scontrol requeue` while it trains (Slurm's SIGTERM):
#      the job checkpoints and exits 0, Slurm starts it again, it resumes (--resume auto)
#      and finishes with the same loss at every step as run 1.
#
#   tests/slurm/requeue_test.sh CORPUS WORKDIR      (BIOBERT: the biobert binary to run)
# The daemons are stopped at the end, whatever happens.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CORPUS=${1:?usage: requeue_test.sh CORPUS WORKDIR}
WORK=${2:?usage: requeue_test.sh CORPUS WORKDIR}
STEPS=${STEPS:-240}
rm -rf "$WORK" && mkdir -p "$WORK"
die() { echo "requeue_test: $*" >&2; for f in "$WORK"/*.out "$WORK"/slurm/slurmctld.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -30 "$f" >&2; }; done; exit 1; }
trap '"$ROOT/tests/slurm/cluster.sh" stop "$WORK/slurm"' EXIT
eval "$("$ROOT/tests/slurm/cluster.sh" start "$WORK/slurm")"

state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
restarts() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p'; }
wait_state() { # JOB STATE SECONDS
  for _ in $(seq $(($3 * 2))); do [ "$(state "$1")" = "$2" ] && return 0; sleep 0.5; done
  die "job $1 is $(state "$1"), not $2, after $3 s"
}
logged_steps() { [ -f "$1/log.jsonl" ] && wc -l < "$1/log.jsonl" || echo 0; }

submit() { # NAME -> job id; the README's command with a CPU-sized request
  (cd "$WORK" && sbatch --parsable --job-name="$1" --gpus-per-node=0 --ntasks-per-node=2 --cpus-per-task=1 \
    --export=ALL,BIOBERT_ROOT="$ROOT" \
    "$ROOT/launch/slurm.sbatch" "$ROOT/configs/tiny.toml" "$CORPUS" "$WORK/$1" \
    --max-steps "$STEPS" --set log.every=1 --set log.eval_every=0 --set checkpoint.every=0)
}

echo "requeue_test: 1. sbatch, uninterrupted"
plain=$(submit plain)
wait_state "$plain" COMPLETED 300
grep -q "checkpoint: .*step_0*$STEPS" "$WORK/plain-$plain.out" || die "run 1 did not reach step $STEPS"

echo "requeue_test: 2. sbatch, then scontrol requeue while it trains"
job=$(submit requeued)
wait_state "$job" RUNNING 60
for _ in $(seq 240); do [ "$(logged_steps "$WORK/requeued")" -ge 40 ] && break; sleep 0.5; done
[ "$(logged_steps "$WORK/requeued")" -ge 40 ] || die "job $job logged no steps"
scontrol requeue "$job"
echo "requeue_test: requeued job $job at step $(logged_steps "$WORK/requeued") of $STEPS"
wait_state "$job" COMPLETED 300
[ "$(restarts "$job")" -ge 1 ] || die "job $job did not restart"
out="$WORK/requeued-$job.out"
grep -q "SIGTERM: the ranks checkpointed" "$out" || die "the first start did not checkpoint on SIGTERM"
grep -q "^resume: step" "$out" || die "the second start did not resume"
grep -q "checkpoint: .*step_0*$STEPS" "$out" || die "run 2 did not reach step $STEPS"

python3 - "$WORK/plain/log.jsonl" "$WORK/requeued/log.jsonl" "$STEPS" <<'PY' || die "the losses differ"
import json, sys
def losses(path):
    by_step = {}
    for line in open(path):
        row = json.loads(line)
        by_step[row["step"]] = row["train/loss"]  # a resumed run's line wins
    return by_step
a, b, steps = losses(sys.argv[1]), losses(sys.argv[2]), int(sys.argv[3])
assert sorted(a) == list(range(1, steps + 1)), "run 1 misses steps"
assert sorted(b) == list(range(1, steps + 1)), "run 2 misses steps"
worst = max(abs(a[s] - b[s]) for s in a)
print(f"requeue_test: {steps} steps, largest loss difference {worst:.2e}")
sys.exit(0 if worst <= 1e-6 else 1)
PY
echo "requeue_test: ok"
