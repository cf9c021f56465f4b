# Source this on a host whose torch was not installed by launch/setup.sh (a GPU node with
# its own torch 2.11.0, say): it finds torch through python3 and exports what the
# binaries need.  Usage:  source launch/env.sh [python-executable]
#
# Exports BIOBERT_TORCH (the torch package folder) and puts its lib folder first on
# LD_LIBRARY_PATH; as root, also lets Open MPI's mpirun run (containers run as root).

_biobert_env() {
  local python=${1:-${BIOBERT_PYTHON:-python3}}
  local torch=${BIOBERT_TORCH:-}
  if [ -z "$torch" ]; then
    torch=$("$python" -c 'import importlib.util as u
s = u.find_spec("torch")
print(s.submodule_search_locations[0] if s and s.submodule_search_locations else "")' 2>/dev/null)
  fi
  if [ -z "$torch" ] || [ ! -f "$torch/lib/libtorch_cpu.so" ]; then
    echo "env.sh: no torch found through $python; pip install torch==2.11.0, or set BIOBERT_TORCH to a torch package folder" >&2
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

_biobert_env "$@"
