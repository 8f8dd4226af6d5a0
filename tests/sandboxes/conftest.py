"""Fixtures for the sandbox tests: one parametrised ``backend`` over every backend.

* ``local`` needs bubblewrap (``make setup`` installs it when run as root). Missing bwrap
  skips locally with the fix in the reason, but FAILS under CI, so the lane can't go quiet.
* ``docker`` is in the slow lane (``make test-slow``): it starts Podman's Docker-compatible
  service through ``scripts/podman_lane.sh`` (apt-installs Podman when root) and builds the
  offline image. Same rule: skipped with a reason locally, a failure under CI.
* ``process`` always runs (not isolated: the escape cases skip it, by design).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rao_envs.sandboxes import make_sandbox

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

SMALL = dict(timeout=5, memory_mb=256, processes=32, file_size_mb=8, disk_mb=16, output_bytes=8192)

BACKENDS = [
    pytest.param("local", id="local"),
    pytest.param("process", id="process"),
    pytest.param("docker", id="docker", marks=pytest.mark.slow),
]
ISOLATED = [p for p in BACKENDS if p.values[0] != "process"]


def unavailable(reason: str):
    """Skip with ``reason`` on a developer machine, fail in CI (never a silent skip there)."""
    if IN_CI:
        pytest.fail(f"required sandbox backend unavailable in CI: {reason}")
    pytest.skip(reason)


_docker_state: dict = {}


def docker_env() -> dict:
    """Bring up Podman's Docker-compatible socket + the offline image once per test run."""
    if "env" in _docker_state:
        return _docker_state["env"]
    if "error" in _docker_state:
        unavailable(_docker_state["error"])
    script = REPO / "scripts" / "podman_lane.sh"
    try:
        out = subprocess.run(["bash", str(script), "env"], capture_output=True, text=True, timeout=900,
                             env={**os.environ, "RAO_PYTHON": sys.executable})
    except (OSError, subprocess.TimeoutExpired) as e:
        _docker_state["error"] = f"podman lane set-up failed: {e}"
        unavailable(_docker_state["error"])
    if out.returncode != 0:
        _docker_state["error"] = f"podman lane set-up failed (rc {out.returncode}): {out.stderr[-1500:]}"
        unavailable(_docker_state["error"])
    env = {}
    for line in out.stdout.splitlines():
        if line.strip() == "PODMAN_STARTED=1":
            _docker_state["started"] = True
        if "=" in line and line.split("=", 1)[0] in ("DOCKER_HOST", "RAO_SANDBOX_IMAGE"):
            k, v = line.split("=", 1)
            env[k] = v
    if "DOCKER_HOST" not in env:
        _docker_state["error"] = f"podman lane printed no DOCKER_HOST: {out.stdout[-500:]}"
        unavailable(_docker_state["error"])
    os.environ.update(env)
    _docker_state["env"] = env
    return env


def build(backend: str, **kw):
    """An unstarted sandbox of ``backend`` with small limits (overridable)."""
    opts = {**SMALL, **kw}
    if backend == "local" and shutil.which("bwrap") is None:
        unavailable("bubblewrap is not installed: run `make setup` as root or `apt-get install bubblewrap`")
    if backend == "docker":
        env = docker_env()
        opts.setdefault("image", env.get("RAO_SANDBOX_IMAGE", "localhost/rao-envs-sandbox:latest"))
    if backend == "process":
        opts.setdefault("warn", False)
    return make_sandbox(backend, **opts)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """The backend name, one test per entry of ``BACKENDS``."""
    return request.param


@pytest.fixture
def sandbox(backend):
    """A started sandbox of ``backend`` with the small test limits, stopped afterwards."""
    sb = build(backend)
    with sb:
        yield sb


def host_pids_of_uid(uid: int) -> list:
    """Host pids whose real uid is ``uid``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            out.append(int(name))
                        break
        except OSError:
            pass
    return out


@pytest.fixture(scope="session", autouse=True)
def _stop_podman_we_started():
    """Stop the Podman service at the end of the run if this run started it."""
    yield
    if _docker_state.get("started"):
        subprocess.run(["bash", str(REPO / "scripts" / "podman_lane.sh"), "stop"], timeout=60, check=False)
