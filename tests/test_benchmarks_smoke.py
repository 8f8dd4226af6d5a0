"""Smoke tests of the benchmark scripts (they must run; their numbers are not checked here)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _textarena_importable() -> bool:
    if importlib.util.find_spec("textarena") is None:
        return False
    try:
        import textarena  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install counts as missing here
        return False
    return True


@pytest.mark.timeout(300)
@pytest.mark.skipif(
    not _textarena_importable(),
    reason="textarena (benchmark-only dependency) is not importable; install it with pip install -e '.[bench]'",
)
def test_engine_overhead_quick():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "engine_overhead.py"), "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    for line in (
        "µs/step", "steps/s", "vs ours",
        "ours: RaoEnv.step (unwrapped), depth 0",
        "ours: gymnasium.make(...) wrappers, depth 0",
        "ours: engine only (TreeEngine.step + observe)",
        "TextArena TowerOfHanoi-v0 observe+step",
        "TextArena TowerOfHanoi-v0 raw step",
        "Gymnasium CartPole-v1 step",
        "ours vs TextArena observe+step: ",
        "target <= 30 µs per node step: ",
        "flat per-step cost: ",
    ):
        assert line in out, f"{line!r} missing from the benchmark output:\n{out[-3000:]}"
    ta_rows = [ln for ln in out.splitlines() if ln.startswith("TextArena TowerOfHanoi-v0 observe+step (")]
    assert ta_rows and "not installed" not in ta_rows[0] and "broken" not in ta_rows[0], ta_rows
