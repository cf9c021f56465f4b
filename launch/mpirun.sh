#!/usr/bin/env bash
# Launches `biobert pretrain` with one rank per GPU of this node, or, with HOSTFILE set,
# across the nodes it lists (each line: "node01 slots=8").
#
#   launch/mpirun.sh --config configs/biobert_base.toml --data corpus/ --out runs/biobert --resume auto
#   HOSTFILE=hosts.txt NP=16 launch/mpirun.sh --config ...
#
# Environment: NP (ranks; default: the GPUs of this node, or 1), HOSTFILE, BIOBERT (the
# binary; default: target/release/biobert beside this script), MPIRUN_ARGS (extra
# arguments for mpirun, e.g. "--mca btl_tcp_if_include eth0").
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIOBERT=${BIOBERT:-$ROOT/target/release/biobert}
# Finds torch on this node (and forwards its location to the others below).
# shellcheck source=env.sh
source "$ROOT/launch/env.sh"

if [ -z "${NP:-}" ]; then
  NP=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [ "$NP" -gt 0 ] || NP=1
fi

args=(-np "$NP" --bind-to none --map-by slot)
if [ -n "${HOSTFILE:-}" ]; then
  args+=(--hostfile "$HOSTFILE")
fi
# Open MPI starts remote ranks with a bare environment: forward what the binary needs.
for var in BIOBERT_TORCH LD_LIBRARY_PATH PATH NCCL_LIBRARY_PATH NCCL_DEBUG NCCL_SOCKET_IFNAME \
  NCCL_IB_HCA NCCL_IB_DISABLE CUDA_VISIBLE_DEVICES; do
  if [ -n "${!var:-}" ]; then args+=(-x "$var"); fi
done
if [ "$(id -u)" -eq 0 ]; then args+=(--allow-run-as-root); fi
# shellcheck disable=SC2086
exec mpirun "${args[@]}" ${MPIRUN_ARGS:-} "$BIOBERT" pretrain "$@"
