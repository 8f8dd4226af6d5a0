"""A real non-editable `pip install .` into a brand-new venv (slow lane)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_clean_venv_non_editable_install(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    code = (
        "import gymnasium as gym, rao_envs, rao_envs.envs.textcraft, rao_envs.sandboxes, rao_envs.testing\n"
        "import rao_envs.policies, rao_envs.protocols, rao_envs.limiter, rao_envs.rollout\n"
        "import rao_envs.distributed.driver, rao_envs.distributed.sandbox  # packaged, and no Ray needed to import\n"
        "gym.make('rao_envs/TextCraftDiscrete-v0').reset(seed=0)  # a task's discrete view, right after import\n"
        "env = gym.make('rao_envs/Toy-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "pol = env.unwrapped.task.oracle()\n"
        "while True:\n"
        "    obs, r, term, trunc, info = env.step(pol(obs, info))\n"
        "    if term or trunc: break\n"
        "print(rao_envs.__file__, env.unwrapped.tree.root.score)\n"
    )
    out = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    path, score = out.stdout.split()
    assert str(venv) in path and "site-packages" in path and float(score) == 1.0
    cli = subprocess.run([str(venv / "bin" / "rao-envs"), "list"], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "TextCraft-v0" in cli.stdout
