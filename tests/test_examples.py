"""Every script in examples/ runs in a subprocess with a tiny budget (CleanRL's habit); plus the demo and the benchmark's quick mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.py"  # `make demo`: not a training script, tested on its own below
VERL_LANE = {"verl_agent_loop.py"}  # needs verl's own venv: smoke-run by tests/verl/test_verl_examples.py (make test-verl)
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if p != DEMO and p.name not in VERL_LANE)
TINY = {
    "cleanrl_ppo_delegation.py": ["--total-timesteps", "512", "--num-envs", "2", "--num-steps", "128", "--eval-episodes", "2"],
    "cleanrl_grpo_llm.py": ["--tiny", "--iterations", "2", "--sft-steps", "20", "--group-size", "2", "--max-new-tokens", "24"],
    "trl_grpo.py": ["--tiny", "--steps", "2", "--sft-steps", "5", "--eval-seeds", "2"],
    "sb3_maskable_ppo.py": ["--tiny"],
}

OWN_TEST = {"sb3_maskable_ppo.py"}  # smoke-run by a test of its own below, which checks its output too

pytest.importorskip("torch")


def _run(args, tmp_path, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def test_every_example_has_a_smoke_budget():
    assert {p.name for p in EXAMPLES} <= set(TINY), "add a tiny budget for the new example to TINY"


@pytest.mark.parametrize("script", [p for p in EXAMPLES if p.name not in OWN_TEST], ids=lambda p: p.name)
def test_example_runs(script, tmp_path):
    extra = ["--log-dir", str(tmp_path / "runs")]
    proc = _run([str(script), *TINY[script.name], *extra], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last
    assert any((tmp_path / "runs").rglob("events.out.tfevents.*")), "TensorBoard event file missing"


def test_ppo_flat_variant_runs(tmp_path):
    script = ROOT / "examples" / "cleanrl_ppo_delegation.py"
    proc = _run([str(script), *TINY[script.name], "--no-delegate", "--log-dir", str(tmp_path / "runs"),
                 "--eval-difficulties", "hard", "--results-json", str(tmp_path / "r.json")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["variant"] == "flat" and result["final"]["hard"] == 0.0


def test_sb3_example_reports_the_oracle_beside_the_policy(tmp_path):
    """The stock SB3 example's tiny run: trains, evaluates on hard val tasks, prints the oracle's tree size too."""
    pytest.importorskip("sb3_contrib")
    script = ROOT / "examples" / "sb3_maskable_ppo.py"
    proc = _run([str(script), *TINY[script.name], "--log-dir", str(tmp_path / "runs"), "--results-json", str(tmp_path / "r.json")], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["eval"]
    assert any((tmp_path / "runs").rglob("events.out.tfevents.*")), "TensorBoard event file missing"
    result = json.loads((tmp_path / "r.json").read_text())
    hard = result["eval"]["hard"]
    assert result["train_steps"] >= 4096 and hard["tasks"] == 4
    assert hard["oracle_success"] == 1.0 and hard["oracle_nodes"] > 1 and hard["nodes"] >= 1
    assert "oracle" in proc.stdout and "mean tree" in proc.stdout


def test_demo_scripted_part(tmp_path):
    """`make demo` without the learning part: the scripted table, its trees and summary."""
    out = tmp_path / "demo"
    proc = _run([str(DEMO), "--no-learn", "--episodes", "1", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    scripted = json.loads((out / "summary.json").read_text())["scripted"]
    assert set(scripted) == {"delegating oracle", "flat oracle", "random"}
    assert all(rate == 1.0 for rate in scripted["delegating oracle"].values()), scripted
    assert len((out / "trees.jsonl").read_text().splitlines()) == 3 * len(scripted["random"])


def test_delegation_benchmark_quick(tmp_path):
    proc = _run([str(ROOT / "benchmarks" / "delegation_learning.py"), "--quick", "--out", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("learning.png", "table.md", "results.json"):
        assert (tmp_path / "out" / name).exists()


def test_demo_plot_draws_two_evaluations_as_points_not_a_trend(tmp_path, monkeypatch):
    import importlib.util

    import matplotlib.figure

    spec = importlib.util.spec_from_file_location("rao_demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "rao_demo", demo)  # dataclasses look their module up
    spec.loader.exec_module(demo)
    figures = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figures.append(self))

    def run(variant, seed, curve):
        return {"variant": variant, "seed": seed, "curve": curve, "final": {"easy": 1.0}, "max_depth": {"easy": 2}}

    two = [{"step": 0, "easy": 0.1}, {"step": 100, "easy": 0.9}]
    demo.plot_learning([run("delegate", 0, two), run("delegate", 1, two), run("flat", 0, two)], tmp_path / "p.png", "t")
    ax = figures[-1].axes[0]
    assert ax.lines and all(line.get_linestyle() == "None" for line in ax.lines)  # markers only, no connecting line
    many = [{"step": s, "easy": s / 300} for s in (0, 100, 200, 300)]
    demo.plot_learning([run("delegate", 0, many)], tmp_path / "q.png", "t")
    assert any(line.get_linestyle() == "-" for line in figures[-1].axes[0].lines)  # a real curve is drawn as one
