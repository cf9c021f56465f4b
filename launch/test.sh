#!/usr/bin/env bash
# Sets up this machine (launch/setup.sh, with Slurm for the launcher tests), then runs every
# test: formatting, clippy, the unit and integration tests of the workspace, including those
# that run under mpirun and under Slurm.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# The launcher tests run launch/slurm.sbatch under a real single-node Slurm; the outside
# checks load our exported folders in transformers (the full torch wheel, about 4 GB).
BIOBERT_TEST_SLURM=1 BIOBERT_TEST_REFERENCE=1 ./launch/setup.sh

# mpirun as root (containers, CI) needs these; harmless otherwise.
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "test: cargo test"
cargo test --workspace --no-fail-fast 2>&1
