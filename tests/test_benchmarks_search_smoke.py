"""Smoke tests of the search and DeepSearch benchmark scripts (they must run; their numbers are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, capture_output=True, text=True, timeout=280
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.timeout(300)
def test_search_index_quick():
    out = run("search_index.py", "--quick")
    for line in ("| tantivy |", "| fts5 |", "| fts5 OR query (baseline) |", "| numpy BM25 (brute force) |",
                 "default backend (tantivy) p50", "fts5 backend p50", "recall@5"):
        assert line in out, f"{line!r} missing:\n{out[-3000:]}"


@pytest.mark.timeout(300)
def test_task_generation_quick():
    out = run("task_generation.py", "--quick")
    for line in ("| Toy-v0 | easy |", "| TextCraft-v0 | extreme |", "| DeepSearchSynth-v0 | extreme |", "index cached:", "| easy | 1,000 |",
                 "| OolongSynth-v0 | extreme |", "document text generated", "baseline: plain Python",
                 "build one 1M-character document", "render one 4k-char chunk", "extreme tree JSON", "MB/s"):
        assert line in out, f"{line!r} missing:\n{out[-3000:]}"


@pytest.mark.timeout(300)
def test_deep_search_depth_quick():
    out = run("deep_search_depth.py", "--quick")
    assert "Root success rate" in out and "not read: 0" in out, out[-3000:]
