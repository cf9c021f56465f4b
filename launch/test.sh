#!/usr/bin/env bash
# Sets up this machine (launch/setup.sh, with Slurm for the launcher tests), then runs every
# test in two tiers:
#   fast: formatting, clippy, and `cargo test` (unit tests and the quick integration
#         tests: what a developer runs after each change, a few minutes on 2 cores);
#   end-to-end: the tests marked #[ignore = "end-to-end ..."]: the quickstart as written,
#         the launchers under mpirun and a real Slurm, the reference checks that reload our
#         folders in transformers, and the GPU scripts' CPU modes.
# Each tier's time is printed at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# The launcher tests run launch/slurm.sbatch under a real single-node Slurm; the outside
# checks load our exported folders in transformers (the full torch wheel, about 4 GB).
setup_started=$SECONDS
BIOBERT_TEST_SLURM=1 BIOBERT_TEST_REFERENCE=1 ./launch/setup.sh
setup=$((SECONDS - setup_started))

# mpirun as root (containers, CI) needs these; harmless otherwise.
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

started=$SECONDS
echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "test: fast tier (cargo test)"
cargo test --workspace --no-fail-fast 2>&1
fast=$((SECONDS - started))
echo "test: end-to-end tier (cargo test -- --ignored)"
cargo test --workspace --no-fail-fast -- --ignored 2>&1
end_to_end=$((SECONDS - started - fast))
printf 'test: set-up %d s, fast tier (fmt, clippy, build, cargo test) %d s, end-to-end tier %d s\n' \
  "$setup" "$fast" "$end_to_end"
