"""Smoke tests of the Code-Synth benchmarks (slow lane: they must run and print their tables)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="Code-Synth runs model code in the local sandbox: install bubblewrap"),
]


def _run(script: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.timeout(300)
def test_code_synth_benchmark_quick():
    out = _run("code_synth.py")
    for line in ("## Generation", "| extreme |", "## Scoring one function", "| local sandbox", "python3 -I` subprocess",
                 "target p50 <= 10 ms:", "target >= 10x the subprocess:"):
        assert line in out, f"{line!r} missing:\n{out[-3000:]}"


@pytest.mark.timeout(300)
def test_code_synth_depth_quick():
    out = _run("code_synth_depth.py")
    rows = [ln for ln in out.splitlines() if ln.startswith(("| easy", "| hard"))]
    assert len(rows) == 2, out
    easy, hard = (r.split("|") for r in rows)
    assert "100%" in easy[3] and "100%" in hard[-3]  # flat solves easy; delegating (default depth) solves hard
    assert "infra errors: 0" in out
