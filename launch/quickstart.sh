#!/usr/bin/env bash
# Sets up this machine, builds the release binaries and runs the main job on the bundled
# sample. The pipeline grows here as it is built: today, the host check on one process and
# under mpirun with two ranks.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

./launch/setup.sh
echo "quickstart: building release binaries"
cargo build --release --workspace --quiet
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

echo "quickstart: 1/2 biobert doctor"
"$BIN/biobert" doctor
echo "quickstart: 2/2 mpirun -np 2 biobert doctor --mpi"
mpirun --oversubscribe -np 2 "$BIN/biobert" doctor --mpi
echo "quickstart: done. Binaries: $BIN/biobert (with $BIN/biobert-core beside it), $BIN/corpus-tools"
