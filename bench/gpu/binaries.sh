# Sourced by the GPU scripts: BIN, the folder the binaries come from: $BIOBERT_BIN, else
# the folder bench/gpu/stage.sh fills (stage/), else the release build.
if [ -n "${BIOBERT_BIN:-}" ]; then
  BIN=$BIOBERT_BIN
elif [ -x "$ROOT/stage/biobert" ]; then
  BIN=$ROOT/stage
else
  BIN=$ROOT/target/release
fi
