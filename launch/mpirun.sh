#!/usr/bin/env bash
# Launches `biobert pretrain` with one rank per GPU of this node, or, with HOSTFILE set,
# across the nodes it lists (each line: "node01 slots=8").
#
#   launch/mpirun.sh --config configs/biobert_base.toml --data corpus/ --out runs/biobert --resume auto
#   HOSTFILE=hosts.txt NP=16 launch/mpirun.sh --config ...
#
# Environment: NP (ranks; default: the GPUs of this node, or 1), HOSTFILE, BIOBERT (the
# binary; default: target/release/biobert beside this script), CORES_PER_RANK (default: this
# node's cores divided by the ranks on a node), MPIRUN_ARGS (extra arguments for mpirun,
# e.g. "--mca btl_tcp_if_include eth0").
#
# Ctrl-C (or SIGTERM) stops the run cleanly: every rank finishes its step, rank 0 writes a
# checkpoint, and the script exits 0; a second Ctrl-C ends it at once.
#
# Binding: each rank gets CORES_PER_RANK cores of its own (--map-by slot:PE=N --bind-to
# core) and as many torch and data-loader threads (OMP_NUM_THREADS, RAYON_NUM_THREADS), so
# that 8 ranks on a node do not each start a thread per core of the whole node and fight
# over them. Ranks fill the cores in order, so the ranks of the low GPUs sit on the first
# socket. With more ranks than cores (CPU test runs) nothing is bound and the node is
# oversubscribed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIOBERT=${BIOBERT:-$ROOT/target/release/biobert}
die() { echo "mpirun.sh: $*" >&2; exit 1; }
if [ -n "${NP:-}" ] && ! [[ $NP =~ ^[1-9][0-9]*$ ]]; then
  die "NP=$NP: expected the number of ranks, a positive integer"
fi
# Finds torch on this node (and forwards its location to the others below).
# shellcheck source=env.sh
source "$ROOT/launch/env.sh" || die "cannot start without torch (see above)"
[ -x "$BIOBERT" ] || die "$BIOBERT not found: build with cargo build --release, or set BIOBERT"
command -v mpirun >/dev/null || die "mpirun not found: install Open MPI (launch/setup.sh does)"

if [ -z "${NP:-}" ]; then
  NP=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [ "$NP" -gt 0 ] || NP=1
fi
args=(-np "$NP")
ranks_per_node=$NP
if [ -n "${HOSTFILE:-}" ]; then
  [ -f "$HOSTFILE" ] || die "HOSTFILE=$HOSTFILE: no such file"
  args+=(--hostfile "$HOSTFILE")
  slots=$(sed -n 's/.*slots=\([0-9]\+\).*/\1/p' "$HOSTFILE" | head -n1)
  ranks_per_node=${slots:-$NP}
fi
cores_per_rank=${CORES_PER_RANK:-$(( $(nproc) / (ranks_per_node > 0 ? ranks_per_node : 1) ))}
if [ "$cores_per_rank" -ge 1 ]; then
  args+=(--map-by "slot:PE=$cores_per_rank" --bind-to core)
  export OMP_NUM_THREADS=$cores_per_rank RAYON_NUM_THREADS=$cores_per_rank
else
  args+=(--map-by slot --bind-to none --oversubscribe)
fi
# Open MPI starts remote ranks with a bare environment: forward what the binary needs.
for var in BIOBERT_TORCH LD_LIBRARY_PATH PATH OMP_NUM_THREADS RAYON_NUM_THREADS \
  NCCL_LIBRARY_PATH NCCL_DEBUG NCCL_SOCKET_IFNAME NCCL_IB_HCA NCCL_IB_DISABLE CUDA_VISIBLE_DEVICES; do
  if [ -n "${!var:-}" ]; then args+=(-x "$var"); fi
done
if [ "$(id -u)" -eq 0 ]; then args+=(--allow-run-as-root); fi
# A scheduler that signals every process of the job reaches mpirun too: give the ranks
# time to checkpoint before mpirun would kill them (see launch/ranks.sh).
args+=(--mca odls_base_sigkill_timeout 110)
echo "mpirun.sh: $NP rank(s), ${cores_per_rank} core(s) each, torch at $BIOBERT_TORCH" >&2
# Ctrl-C or SIGTERM: the ranks finish the step, checkpoint and exit 0 (launch/ranks.sh).
# shellcheck source=ranks.sh
source "$ROOT/launch/ranks.sh"
if [ -z "${HOSTFILE:-}" ]; then RANKS_ALL_LOCAL=1; fi
# shellcheck disable=SC2086
run_ranks mpirun "${args[@]}" ${MPIRUN_ARGS:-} "$BIOBERT" pretrain "$@"
if [ -n "$RANKS_SIGNAL" ] && [ "$RANKS_FAILED" = 0 ]; then
  echo "mpirun.sh: stopped by SIG$RANKS_SIGNAL; continue with --resume auto" >&2
  exit 0
fi
if [ "$RANKS_RC" -ne 0 ]; then
  # The run folder: --out DIR or --out=DIR, else pretrain's default.
  out=runs/pretrain prev=""
  for arg in "$@"; do
    case $arg in --out=*) out=${arg#--out=} ;; esac
    if [ "$prev" = --out ]; then out=$arg; fi
    prev=$arg
  done
  ranks_print_verdicts "$out"
fi
exit "$RANKS_RC"
