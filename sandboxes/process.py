"""The ``process`` backend: the same fork-server as a plain subprocess, **no isolation**.

For platforms without bubblewrap (macOS, locked-down containers) and for debugging. Snippets
run as the calling user with only rlimits and a private temp work dir: they can read your
files and reach the network. A loud warning is printed once per process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from typing import Optional

from .base import ResourceLimits, Sandbox, Transport, kill_process_group, spawn_worker, worker_source

_warned = False
_warn_lock = threading.Lock()

WARNING = (
    "rao_envs sandbox backend 'process' is NOT ISOLATED: model-written code runs as your user "
    "with full access to your files and network. Use it only for trusted code or debugging; "
    "install bubblewrap (`apt-get install bubblewrap`) for the isolated 'local' backend."
)


class ProcessSandbox(Sandbox):
    """Plain subprocess fork-server with rlimits only (NOT isolated; warns once).

    Options: ``python`` (interpreter, default this one), ``workdir`` (default: a fresh private
    temp dir removed at :meth:`stop`).
    """

    backend = "process"
    pid_namespace = False

    def __init__(self, limits: Optional[ResourceLimits] = None, *, python: Optional[str] = None,
                 workdir: Optional[str] = None, warn: bool = True, **kw):
        super().__init__(limits, **kw)
        self.python = python or sys.executable
        self._given_workdir = workdir
        self._tmpdir: Optional[str] = None
        self._proc: Optional[subprocess.Popen] = None
        if warn:
            _warn_once()

    def _workdir(self) -> str:
        if self._given_workdir:
            return self._given_workdir
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="rao_sbx_")
        return self._tmpdir

    def _launch(self, config: dict) -> Transport:
        import json

        argv = [self.python, "-I", "-S", "-c", worker_source(), json.dumps(config)]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": config["workdir"], "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1"}
        transport = spawn_worker(argv, env=env, cwd=config["workdir"])
        self._proc = transport.proc  # type: ignore[attr-defined]
        return transport

    def _teardown(self) -> None:
        kill_process_group(self._proc)
        self._proc = None
        # sessions called setsid(): kill their groups too (pids are host pids in this backend)
        for pid in self._session_pids:
            try:
                os.killpg(pid, 9)
            except OSError:
                pass
        self._session_pids = []
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def kill_worker(self) -> None:
        """SIGKILL the fork-server from the host (simulates a crashed worker)."""
        if self._proc is not None:
            try:
                self._proc.kill()
            except OSError:
                pass


def _warn_once() -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    warnings.warn(WARNING, RuntimeWarning, stacklevel=3)
    print(f"\n*** WARNING: {WARNING} ***\n", file=sys.stderr)
