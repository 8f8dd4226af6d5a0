"""Smoke tests of the Oolong-Synth benchmark scripts (they must run; their numbers are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=170
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.timeout(180)
def test_oolong_oracles_quick():
    out = _run("oolong_oracles.py")
    for line in ("Root success", "Delegating oracle trees", "Flat oracle: mean root score per question kind", "extreme"):
        assert line in out, f"{line!r} missing from the benchmark output:\n{out[-3000:]}"
