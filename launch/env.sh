# Source this on a host whose torch was not installed by launch/setup.sh (a GPU node with
# its own torch 2.11.0, say): it finds torch through python3 and exports what the
# binaries need.
#
#   source launch/env.sh                        # torch of the python3 on PATH, or of the
#                                               # venv launch/setup.sh made (.venv)
#   BIOBERT_PYTHON=/opt/venv/bin/python source launch/env.sh
#   BIOBERT_TORCH=/opt/venv/lib/python3.12/site-packages/torch source launch/env.sh
#
# It reads no arguments: a sourced file sees its caller's, so a launcher sourcing it would
# hand it its own. Exports BIOBERT_TORCH (the torch package folder) and puts its lib folder
# first on LD_LIBRARY_PATH; as root, also lets Open MPI's mpirun run (containers run as
# root). When no torch is found it says so and returns 1.

_biobert_env() {
  local here pythons python torch=${BIOBERT_TORCH:-}
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if [ -n "${BIOBERT_PYTHON:-}" ]; then pythons=("$BIOBERT_PYTHON"); else pythons=(python3 "$here/.venv/bin/python"); fi
  if [ -z "$torch" ]; then
    for python in "${pythons[@]}"; do
      command -v "$python" >/dev/null 2>&1 || continue
      torch=$("$python" -c 'import importlib.util as u
s = u.find_spec("torch")
print(s.submodule_search_locations[0] if s and s.submodule_search_locations else "")' 2>/dev/null || true)
      [ -n "$torch" ] && break
    done
  fi
  if [ -z "$torch" ] || [ ! -f "$torch/lib/libtorch_cpu.so" ]; then
    echo "env.sh: no torch found (${BIOBERT_TORCH:+BIOBERT_TORCH=$BIOBERT_TORCH; }asked: ${pythons[*]}); pip install torch==2.11.0, or set BIOBERT_TORCH to a torch package folder" >&2
    return 1
  fi
  export BIOBERT_TORCH=$torch
  case ":${LD_LIBRARY_PATH:-}:" in
    *":$torch/lib:"*) ;;
    *) export LD_LIBRARY_PATH="$torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
  esac
  if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
}

_biobert_env
