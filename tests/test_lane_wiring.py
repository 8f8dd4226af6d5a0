"""The slow lanes' fixtures resolve, checked in the fast lane.

``make test-slow`` runs only in CI and takes over an hour, so a slow test whose fixture is not
importable from its module (``fixture 'x' not found``) would otherwise show up only there.
``pytest --setup-plan`` resolves every fixture of every slow test without running one (seconds).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_slow_test_resolves_its_fixtures():
    out = subprocess.run([sys.executable, "-m", "pytest", "--setup-plan", "-m", "slow", "-q", "-p", "no:cacheprovider",
                          "tests"], cwd=REPO, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert "not found" not in text and " ERROR " not in text and out.returncode in (0, 5), text[-4000:]
