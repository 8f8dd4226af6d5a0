"""The ``local`` backend: a bubblewrap box per :class:`LocalSandbox`, fork-server inside.

Invocation (traps from reference/sandbox_search.md §3.3 handled here):

* as root, bwrap is launched **as a real unprivileged uid** (``setpriv --reuid U``), because
  root inside bwrap's user namespace is still host root (reads root-owned files, ignores
  ``RLIMIT_NPROC``); each box gets its own uid from a high range;
* namespaces: user, pid, net, ipc, uts, mount (``--unshare-all``), nested user namespaces
  disabled, all capabilities dropped, new terminal session, ``--die-with-parent``;
* the fork-server is PID 1 of the box (``--as-pid-1``): no bwrap init holds the host's pipes,
  and the kernel drops every signal user code sends to its namespace's init;
* filesystem: only ``/usr`` (plus the ``/lib``, ``/bin`` symlinks), the interpreter's prefix if
  it lives elsewhere, a fresh ``/proc``, a read-only ``/dev`` with a size-capped ``/dev/shm``,
  size-capped tmpfs ``/tmp`` and ``/work``; nothing from ``/etc``, ``/home``, ``/root`` or the
  project checkout;
* host channel: stdin/stdout/stderr are pipes (no host file behind any fd of the box);
* limits: rlimits per session (worker), and when the host is root with writable cgroup v1
  ``memory`` and ``pids`` controllers, a per-box cgroup on top.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from functools import lru_cache
from typing import Optional

from .base import (
    PipeTransport,
    ResourceLimits,
    Sandbox,
    SandboxUnavailable,
    Transport,
    kill_process_group,
    spawn_worker,
    worker_source,
)

_UID_BASE = 61000
_UID_SPAN = 4000
_uid_counter = itertools.count()
_uid_lock = threading.Lock()

BWRAP_MISSING = (
    "the 'local' sandbox needs bubblewrap, and `bwrap` is not on PATH. Install it with "
    "`sudo apt-get install bubblewrap` (Debian/Ubuntu; `make setup` does this when run as root) "
    "or `sudo dnf install bubblewrap` (Fedora). Alternatives: make_sandbox('docker') with a "
    "Docker/Podman engine, or make_sandbox('process') which runs code WITHOUT isolation."
)


def _alloc_uid() -> int:
    with _uid_lock:
        n = next(_uid_counter)
    return _UID_BASE + (os.getpid() * 97 + n) % _UID_SPAN


@lru_cache(maxsize=8)
def _python_layout(python: str) -> tuple:
    """(real interpreter path, extra dirs to bind) for ``python``; raises SandboxUnavailable."""
    real = os.path.realpath(python)
    if not os.access(real, os.X_OK):
        raise SandboxUnavailable(f"sandbox interpreter {python!r} is not an executable file")
    if real.startswith("/usr/"):
        return real, ()
    try:
        out = subprocess.run([real, "-I", "-S", "-c", "import sys; print(sys.base_prefix)"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise SandboxUnavailable(f"cannot run the sandbox interpreter {python!r}: {e}") from None
    binds = {os.path.realpath(out)}
    binds.add(os.path.dirname(os.path.dirname(real)))
    return real, tuple(sorted(binds))


def default_python() -> str:
    """The interpreter used inside the box: Debian's ``/usr/bin/python3`` when present (a pyenv
    Python under ``/root`` is unreadable by the sandbox uid), else this interpreter."""
    if os.path.exists("/usr/bin/python3"):
        return "/usr/bin/python3"
    return os.path.realpath(sys.executable)


class _Cgroup:
    """A per-box cgroup v1 ``memory`` + ``pids`` pair, created only when writable."""

    def __init__(self, name: str, memory_bytes: int, pids: int):
        self.dirs: list = []
        self.fds: list = []
        for ctrl, files in (("memory", {"memory.limit_in_bytes": memory_bytes,
                                        "memory.memsw.limit_in_bytes": memory_bytes}),
                            ("pids", {"pids.max": pids})):
            base = self._own(ctrl)
            if base is None:
                continue
            path = os.path.join(base, name)
            try:
                os.mkdir(path, 0o755)
            except OSError:
                continue
            self.dirs.append(path)
            for fname, value in files.items():
                if not value:
                    continue
                try:
                    with open(os.path.join(path, fname), "w") as f:
                        f.write(str(int(value)))
                except OSError:
                    pass  # e.g. memsw absent without swap accounting
            try:
                self.fds.append(os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
            except OSError:
                pass

    @staticmethod
    def _own(ctrl: str) -> Optional[str]:
        root = f"/sys/fs/cgroup/{ctrl}"
        if os.geteuid() != 0 or not os.path.isdir(root):
            return None
        try:
            with open("/proc/self/cgroup") as f:
                for line in f:
                    _, ctrls, path = line.rstrip("\n").split(":", 2)
                    if ctrl in ctrls.split(","):
                        base = root + path
                        return base if os.access(base, os.W_OK) else None
        except OSError:
            return None
        return None

    def join(self) -> None:
        """Called in the child between fork and exec: move it into the cgroups."""
        for fd in self.fds:
            try:
                os.write(fd, b"0")
            except OSError:
                pass

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer took in this box's memory cgroup."""
        for d in self.dirs:
            if "/memory/" in d:
                try:
                    with open(os.path.join(d, "memory.oom_control")) as f:
                        for line in f:
                            if line.startswith("oom_kill "):
                                return int(line.split()[1])
                except (OSError, ValueError):
                    return 0
        return 0

    def remove(self) -> None:
        """Close fds and remove the (now empty) cgroup dirs; never raises."""
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
        for d in self.dirs:
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    # kill anything still inside, then retry
                    try:
                        with open(os.path.join(d, "cgroup.procs")) as f:
                            for pid in f.read().split():
                                try:
                                    os.kill(int(pid), 9)
                                except OSError:
                                    pass
                    except OSError:
                        pass
                    time.sleep(0.01)
        self.dirs = []


class LocalSandbox(Sandbox):
    """bubblewrap namespaces + warm fork-server, run as an unprivileged uid (default on Linux).

    Options: ``python`` (interpreter inside the box, default :func:`default_python`),
    ``cgroups`` (True/False/None = use when writable), ``extra_ro_binds`` (host paths to bind
    read-only at the same place, e.g. a world-readable venv).
    """

    backend = "local"
    pid_namespace = True
    seccomp_mode = "require"

    def __init__(self, limits: Optional[ResourceLimits] = None, *, python: Optional[str] = None,
                 cgroups: Optional[bool] = None, extra_ro_binds: tuple = (), **kw):
        super().__init__(limits, **kw)
        self.python = python or default_python()
        self.use_cgroups = cgroups
        self.extra_ro_binds = tuple(extra_ro_binds)
        self.uid: Optional[int] = None
        self._proc: Optional[subprocess.Popen] = None
        self._cgroup: Optional[_Cgroup] = None
        self._oom_seen = 0

    def _scratch(self) -> list:
        return ["/work", "/tmp", "/dev/shm"]

    def _agent_cause(self) -> Optional[str]:
        """"memory" when the box's memory cgroup OOM-killed something since we last looked."""
        cg = self._cgroup
        if cg is None:
            return None
        n = cg.oom_kills()
        if n > self._oom_seen:
            self._oom_seen = n
            return "memory"
        return None

    @staticmethod
    def check_available() -> None:
        """Raise :class:`SandboxUnavailable` (naming the fix) if bwrap cannot be used here."""
        if not sys.platform.startswith("linux"):
            raise SandboxUnavailable(
                "the 'local' sandbox needs Linux namespaces; on this platform use "
                "make_sandbox('docker') or make_sandbox('process') (NOT isolated)")
        if shutil.which("bwrap") is None:
            raise SandboxUnavailable(BWRAP_MISSING)

    def argv(self, config_json: str) -> list:
        """The full command line that starts this box (setpriv + bwrap + python worker)."""
        python, binds = _python_layout(self.python)
        lim = self.limits
        argv: list = []
        if os.geteuid() == 0:
            self.uid = _alloc_uid()
            if shutil.which("setpriv"):
                argv += ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                         "--inh-caps=-all", "--bounding-set=-all"]
        tmp_bytes = str(lim.disk_bytes(64))
        work_bytes = str(lim.disk_bytes())
        argv += [
            shutil.which("bwrap") or "bwrap",
            "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--as-pid-1",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
        ]
        for b in tuple(binds) + self.extra_ro_binds:
            if not b.startswith("/usr/") and b != "/usr":
                argv += ["--ro-bind", b, b]
        argv += [
            "--proc", "/proc", "--dev", "/dev",
            "--size", tmp_bytes, "--perms", "1777", "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
            "--size", tmp_bytes, "--perms", "0700", "--tmpfs", "/tmp",
            "--size", work_bytes, "--perms", "0700", "--tmpfs", "/work",
            "--remount-ro", "/",
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/work",
            "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--hostname", "sandbox", "--chdir", "/work",
            python, "-I", "-S", "-c", worker_source(), config_json,
        ]
        return argv

    def _launch(self, config: dict) -> Transport:
        import json

        self.check_available()
        argv = self.argv(json.dumps(config))
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        preexec = None
        want = self.use_cgroups
        if want or (want is None and os.geteuid() == 0):
            lim = self.limits
            cg = _Cgroup(f"rao_sbx_{os.getpid()}_{id(self):x}", lim.box_memory_bytes(), (lim.processes or 64) + 32)
            if cg.fds:
                self._cgroup = cg
                self._oom_seen = cg.oom_kills()
                preexec = cg.join
            else:
                cg.remove()
        try:
            transport = spawn_worker(argv, env=env, cwd="/", preexec_fn=preexec)
        except OSError as e:
            self._drop_cgroup()
            raise SandboxUnavailable(f"cannot start bwrap: {e}. {BWRAP_MISSING}") from None
        self._proc = transport.proc  # type: ignore[attr-defined]
        return transport

    def _drop_cgroup(self) -> None:
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None

    def _teardown(self) -> None:
        kill_process_group(self._proc)
        self._proc = None
        self._drop_cgroup()

    def kill_worker(self) -> None:
        """SIGKILL the bwrap process tree from the host (simulates a crashed worker); returns once
        the worker is gone (bwrap's ``--new-session`` puts it outside the killed group: it dies
        with its parent, a moment later, so a request sent at once could still be served)."""
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, 9)
            except OSError:
                pass
            if isinstance(self._transport, PipeTransport):
                self._transport.wait_closed(5.0)

    @property
    def host_pid(self) -> Optional[int]:
        """Host pid of the outermost launcher process (setpriv/bwrap)."""
        return self._proc.pid if self._proc else None
