#!/usr/bin/env bash
# Builds the release binaries and puts biobert, biobert-core and corpus-tools, stripped, in
# one folder (default: stage/ in the repository, ignored by git) that travels to a GPU host
# with the repository; bench/gpu/check.sh and throughput.sh take their binaries from it.
# The release binaries carry line tables (170 MB); stripped they are about 16 MB.
#
#   bench/gpu/stage.sh [DIR]
#   BIOBERT_BUILT=target/debug bench/gpu/stage.sh DIR   # stage binaries built already (the
#                                                        # tests' own build), no cargo run
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=${1:-$ROOT/stage}
LIMIT_MIB=32
cd "$ROOT"
if [ -n "${BIOBERT_BUILT:-}" ]; then
  FROM=$BIOBERT_BUILT
  echo "stage: binaries from $FROM" >&2
else
  echo "stage: cargo build --release --workspace" >&2
  cargo build --release --workspace --quiet
  FROM=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi
mkdir -p "$DIR"
for bin in biobert biobert-core corpus-tools; do
  strip -o "$DIR/$bin.tmp" "$FROM/$bin"
  mv "$DIR/$bin.tmp" "$DIR/$bin"
done
"$DIR/biobert" --version >/dev/null
size=$(du -sm "$DIR" | cut -f1)
ls -l "$DIR" | tail -n +2 >&2
echo "stage: $DIR holds $size MiB (limit $LIMIT_MIB)" >&2
[ "$size" -le "$LIMIT_MIB" ] || { echo "stage: $DIR is over $LIMIT_MIB MiB" >&2; exit 1; }
