"""The verl example and config: the CPU smoke run, the printed commands, and verl_rao.yaml composed by Hydra."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "verl_agent_loop.py"


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.timeout(600)
def test_smoke_run(tmp_path):
    out = tmp_path / "smoke.json"
    res = subprocess.run([sys.executable, str(EXAMPLE), "--smoke", "--tasks", "2", "--group-size", "2", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "smoke ok: 4 trees" in res.stdout
    summary = json.loads(out.read_text())
    assert summary["trees"] == 4 and summary["outputs"] >= 4 and summary["sampled_tokens"] > 0


@pytest.mark.parametrize("gpus", [1, 8])
def test_dry_run_prints_the_main_ppo_command(gpus):
    res = subprocess.run([sys.executable, str(EXAMPLE), "--gpus", str(gpus), "--model", "m", "--dry-run"],
                         capture_output=True, text=True, timeout=120, env=_env())
    assert res.returncode == 0, res.stderr[-2000:]
    line = res.stdout.strip()
    assert "-m verl.trainer.main_ppo" in line and "--config-name=verl_rao" in line
    assert ("trainer.n_gpus_per_node=1" in line) == (gpus == 1)


@pytest.mark.parametrize("gpus", [1, 8])
def test_config_composes_with_verls_own(gpus):
    """examples/verl_rao.yaml on top of verl's ppo_trainer: every key exists, the RAO pieces resolve and import."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rao_envs.adapters.verl import RAOSettings

    sys.path.insert(0, str(REPO / "examples"))
    try:
        example = importlib.import_module("verl_agent_loop")
    finally:
        sys.path.pop(0)
    overrides = example.command(example.Args(gpus=gpus, model="m"))[5:]  # after --config-path, --config-name
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "examples"), version_base=None):
        cfg = compose(config_name="verl_rao", overrides=overrides)
    assert cfg.algorithm.adv_estimator == "rao_envs"
    assert cfg.actor_rollout_ref.rollout.agent.default_agent_loop == "rao_envs"
    assert cfg.trainer.use_v1 and cfg.trainer.v1.trainer_mode == "rao_sync"
    assert cfg.trainer.n_gpus_per_node == gpus
    assert cfg.actor_rollout_ref.rollout.prompt_length == cfg.data.max_prompt_length
    assert RAOSettings.from_config(cfg).credit == "rao"
    hook = cfg.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook
    module, _, name = hook.rpartition(".")
    getattr(importlib.import_module(module), name)()  # runs where TransferQueue is absent, too
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    assert get_adv_estimator_fn(cfg.algorithm.adv_estimator).__module__ == "rao_envs.adapters.verl"


def test_gpu_script_exits_2_without_cuda():
    """benchmarks/gpu_verl.sh measures nothing on a machine without CUDA, and says so."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: run the script itself")
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_verl.sh")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHON": sys.executable})
    assert res.returncode == 2 and "no CUDA device" in res.stderr
