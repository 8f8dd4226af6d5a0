"""The sandbox protocol shared by every backend: limits, results, sessions, the host channel.

A :class:`Sandbox` is one isolated *box* (a bubblewrap namespace set, a container, or a plain
process group) running the fork-server of :mod:`rao_envs.sandboxes.worker`. Inside a box, each
REPL *session* is a process forked from that pre-imported interpreter; its globals survive
between :meth:`Session.run` calls. ``Sandbox.run`` uses the box's default session.

Infrastructure failures never raise out of :meth:`Sandbox.run`: they come back as
``ExecResult(error_kind="infra")`` (call :meth:`ExecResult.raise_for_infra` inside a task tool
to hand them to the engine, DESIGN §1.8). Only set-up problems a user must fix raise
(:class:`SandboxUnavailable`).
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import os
import select
import signal
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

# the engine's error classes, so a task tool can re-raise our errors unchanged
from rao_envs.errors import ConfigError, InfraError, RaoEnvsError

__all__ = [
    "ExecResult",
    "ResourceLimits",
    "Sandbox",
    "Session",
    "SandboxError",
    "SandboxInfraError",
    "SandboxUnavailable",
    "SandboxConfigError",
]

_HDR = struct.Struct(">I")
_MAX_REPLY = 64 * 1024 * 1024
ERROR_KINDS = (None, "exception", "memory", "timeout", "crashed", "infra")


# --------------------------------------------------------------------------- errors
class SandboxError(Exception):
    """Base class of every error raised by :mod:`rao_envs.sandboxes`."""


class SandboxUnavailable(SandboxError, RaoEnvsError):
    """The backend cannot run on this machine; the message says what to install or use instead."""


class SandboxConfigError(SandboxError, ConfigError):
    """Bad arguments to :func:`make_sandbox` or a backend (unknown limit, wrong type)."""


class SandboxInfraError(SandboxError, InfraError):
    """The sandbox itself failed (worker died, no reply, engine gone): not the agent's fault.

    Subclasses ``rao_envs.errors.InfraError``, so raising it from a task tool marks the node
    ``infra_error`` and the episode goes on.
    """

    def __init__(self, message: str, result: Optional["ExecResult"] = None):
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------- limits / results
@dataclass(frozen=True)
class ResourceLimits:
    """Resource limits applied to every session of a box (all optional, 0 = backend default off).

    ``timeout`` is the default wall-clock limit per :meth:`Sandbox.run`; ``cpu_seconds`` the CPU
    limit per run (defaults to ``timeout`` + 2 s, a backstop behind the wall clock); ``memory_mb`` the address-space / cgroup memory
    limit; ``processes`` the process/thread count; ``file_size_mb`` the largest file a snippet
    may write; ``disk_mb`` the size of the work dir (tmpfs where the backend has one);
    ``output_bytes`` the cap on each of stdout and stderr per run.
    """

    timeout: float = 10.0
    cpu_seconds: Optional[float] = None
    memory_mb: int = 1024
    processes: int = 64
    file_size_mb: int = 16
    open_files: int = 256
    disk_mb: int = 64
    output_bytes: int = 64 * 1024

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> "ResourceLimits":
        """Pop the limit fields out of ``kwargs`` (mutated) and validate them."""
        names = {f.name for f in dataclasses.fields(cls)}
        picked = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        lim = cls(**picked)
        for f in dataclasses.fields(cls):
            v = getattr(lim, f.name)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0):
                raise SandboxConfigError(f"sandbox limit {f.name}={v!r} must be a non-negative number")
        if lim.timeout <= 0:
            raise SandboxConfigError(f"sandbox limit timeout={lim.timeout!r} must be > 0 seconds")
        return lim

    def worker_config(self) -> dict:
        """The limits in the form the in-sandbox worker applies (bytes, counts)."""
        return {
            "memory_bytes": int(self.memory_mb * 1024 * 1024) if self.memory_mb else 0,
            "processes": int(self.processes),
            "file_size_bytes": int(self.file_size_mb * 1024 * 1024) if self.file_size_mb else 0,
            "open_files": int(self.open_files),
            "output_bytes": int(self.output_bytes),
        }


@dataclass
class ExecResult:
    """What one :meth:`Sandbox.run` produced.

    ``exit`` is 0 on success, 1 for an uncaught exception, the ``SystemExit`` code, or
    ``-signal`` when the session process was killed. ``error_kind`` is ``None`` on success or
    one of ``"exception"`` (the code raised), ``"memory"`` (MemoryError / memory limit),
    ``"timeout"`` (wall or CPU limit), ``"crashed"`` (the session process died; it was
    restarted, earlier variables are gone) or ``"infra"`` (the sandbox itself failed).
    ``truncated`` is True when stdout or stderr hit the output cap.
    """

    stdout: str = ""
    stderr: str = ""
    exit: int = 0
    duration: float = 0.0
    truncated: bool = False
    error_kind: Optional[str] = None
    restarted: bool = False

    @property
    def ok(self) -> bool:
        """True when the snippet ran to completion without an error."""
        return self.error_kind is None and self.exit == 0

    @property
    def is_infra(self) -> bool:
        """True when the failure is the sandbox's, not the code's."""
        return self.error_kind == "infra"

    def raise_for_infra(self) -> "ExecResult":
        """Raise :class:`SandboxInfraError` (an ``InfraError``) if this is an infra failure."""
        if self.is_infra:
            raise SandboxInfraError(self.stderr.strip() or "sandbox infrastructure failure", self)
        return self

    def observation(self) -> str:
        """A compact text rendering for an agent's next observation."""
        parts = []
        if self.stdout:
            parts.append(self.stdout.rstrip("\n"))
        if self.stderr:
            parts.append(self.stderr.rstrip("\n"))
        if self.truncated:
            parts.append("[output truncated]")
        if self.error_kind and not self.stderr:
            parts.append(f"[{self.error_kind}, exit {self.exit}]")
        return "\n".join(parts)

    @classmethod
    def infra(cls, message: str, duration: float = 0.0) -> "ExecResult":
        """Build an infrastructure-failure result."""
        return cls(stderr=f"[sandbox infra error] {message}\n", exit=-1, duration=duration, error_kind="infra")


# --------------------------------------------------------------------------- host <-> worker channel
class WorkerDied(Exception):
    """The worker process closed its channel, timed out or sent garbage (internal)."""


class Transport:
    """A byte channel to one worker: ``send`` and ``recv_exact`` with deadlines.

    ``send`` is shared: a subclass says what ``select`` waits on (:meth:`_writable`) and does
    one non-blocking write (:meth:`_write_some`); ``peer`` and ``channel`` name the other end
    and the channel in error messages.
    """

    peer: ClassVar[str] = "worker"
    channel: ClassVar[str] = "worker pipe"

    def send(self, data: bytes, deadline: float) -> None:
        """Write all of ``data`` before ``deadline`` (non-blocking writes + select) or raise
        :class:`WorkerDied`."""
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerDied(f"timed out writing to the {self.peer}")
            _, w, _ = select.select([], [self._writable()], [], left)
            if not w:
                continue
            try:
                n = self._write_some(view)
            except BlockingIOError:
                continue
            except OSError as e:
                raise WorkerDied(f"{self.channel} closed ({e})") from None
            view = view[n:]

    def _writable(self) -> Any:  # pragma: no cover - interface
        """What ``select`` waits on until a write can proceed (an fd or a socket)."""
        raise NotImplementedError

    def _write_some(self, view: memoryview) -> int:  # pragma: no cover - interface
        """One non-blocking write of (a prefix of) ``view``; returns the bytes written."""
        raise NotImplementedError

    def recv_exact(self, n: int, deadline: float) -> bytes:  # pragma: no cover - interface
        """Read exactly ``n`` bytes before ``deadline`` or raise :class:`WorkerDied`."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        """Release the channel (the backend kills the worker separately)."""

    def diagnostics(self) -> str:
        """Tail of the worker's own stderr, for error messages."""
        return ""


class PipeTransport(Transport):
    """Channel over a subprocess's stdin/stdout pipes; its stderr goes to an unlinked temp file."""

    def __init__(self, proc: subprocess.Popen, errfile):
        self.proc = proc
        self.errfile = errfile
        self.wfd = proc.stdin.fileno()
        self.rfd = proc.stdout.fileno()
        os.set_blocking(self.wfd, False)

    def _writable(self) -> int:
        """The worker's stdin pipe (non-blocking)."""
        return self.wfd

    def _write_some(self, view: memoryview) -> int:
        """``os.write`` to the worker's stdin pipe."""
        return os.write(self.wfd, view)

    def recv_exact(self, n: int, deadline: float) -> bytes:
        """Read with a deadline; EOF means the worker died."""
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerDied("timed out waiting for the worker's reply")
            r, _, _ = select.select([self.rfd], [], [], left)
            if not r:
                continue
            chunk = os.read(self.rfd, n - len(buf))
            if not chunk:
                raise WorkerDied("worker closed its channel (it died or was killed)")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        """Close our ends of the pipes."""
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def diagnostics(self) -> str:
        """Last 2 KiB the worker (or bwrap) wrote to stderr."""
        try:
            self.errfile.seek(0, os.SEEK_END)
            size = self.errfile.tell()
            self.errfile.seek(max(0, size - 2048))
            return self.errfile.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""


def worker_source() -> str:
    """Source of the in-sandbox worker (shipped in the wheel as ``rao_envs.sandboxes.worker``)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
    with open(path, encoding="utf-8") as f:
        return f.read()


DEFAULT_PRELOAD = (
    "json", "math", "re", "collections", "itertools", "functools", "random", "string",
    "datetime", "heapq", "bisect", "typing", "dataclasses", "textwrap", "statistics",
    "fractions", "decimal", "copy", "operator",
)  # fmt: skip


# --------------------------------------------------------------------------- sandbox
class Sandbox:
    """One isolated box with a warm fork-server and a default REPL session.

    Use as a context manager (``with make_sandbox() as sb: sb.run("print(1)")``) or call
    :meth:`start` / :meth:`stop`. ``run`` starts the box lazily. Thread-safe: calls on one box
    are serialised.
    """

    backend: ClassVar[str] = "base"
    #: whether the worker runs in its own PID namespace (enables the straggler sweep)
    pid_namespace: ClassVar[bool] = False
    #: whether sessions can be forked (every backend running the shared worker can)
    can_fork: ClassVar[bool] = True

    def __init__(self, limits: Optional[ResourceLimits] = None, *, preload: tuple = DEFAULT_PRELOAD,
                 start_timeout: float = 30.0, **options: Any):
        if options:
            raise SandboxConfigError(
                f"unknown option(s) for the {self.backend!r} sandbox: {sorted(options)}; limits are "
                f"{[f.name for f in dataclasses.fields(ResourceLimits)]}")
        self.limits = limits or ResourceLimits()
        self.preload = tuple(preload)
        self.start_timeout = float(start_timeout)
        self._lock = threading.RLock()
        self._transport: Optional[Transport] = None
        self._sids = itertools.count(1)
        self._started = False
        self._broken: Optional[str] = None
        self._session_pids: list = []  # last reported session pids (as the worker sees them)
        self.worker_pid: Optional[int] = None  # pid of the fork-server as the worker sees it
        self.python_version: Optional[str] = None
        self.default = Session(self, 0)

    # ----- backend hooks
    def _launch(self, config: dict) -> Transport:  # pragma: no cover - interface
        """Start the worker with ``config`` (JSON argv) and return its transport."""
        raise NotImplementedError

    def _teardown(self) -> None:  # pragma: no cover - interface
        """Kill the worker and everything it started; must never raise and never hang."""
        raise NotImplementedError

    def _workdir(self) -> str:
        """Path of the work dir as seen inside the box."""
        return "/work"

    def kill_worker(self) -> None:
        """Kill the fork-server process from the host (used by crash-recovery tests)."""
        raise NotImplementedError

    # ----- lifecycle
    def _config(self) -> dict:
        return {
            "limits": self.limits.worker_config(),
            "pidns": self.pid_namespace,
            "workdir": self._workdir(),
            "preload": list(self.preload),
        }

    def start(self) -> "Sandbox":
        """Start the box and its default session (idempotent). Raises :class:`SandboxUnavailable`
        if the backend cannot work here, :class:`SandboxInfraError` if the start failed."""
        with self._lock:
            if self._started:
                return self
            self._broken = None
            deadline = time.monotonic() + self.start_timeout
            transport = self._launch(self._config())
            self._transport = transport
            try:
                hello = self._recv(deadline)
                if not hello.get("ready"):
                    raise WorkerDied(f"unexpected greeting {hello!r}")
                self.worker_pid = hello.get("pid")
                self.python_version = hello.get("python")
                reply = self._call({"op": "new", "sid": 0}, deadline)
                if not reply.get("ok"):
                    raise WorkerDied(str(reply))
            except WorkerDied as e:
                diag = transport.diagnostics()
                self._kill()
                raise SandboxInfraError(
                    f"the {self.backend!r} sandbox did not start: {e}" + (f"\nworker stderr: {diag}" if diag else "")
                ) from None
            self._started = True
            self._sids = itertools.count(1)
            self.default = Session(self, 0)
            return self

    def stop(self) -> None:
        """Kill the box and everything in it (idempotent, never raises)."""
        with self._lock:
            self._kill()

    def _kill(self) -> None:
        self._started = False
        try:  # kill first: closing the channel first lets the worker exit and race the removal
            self._teardown()
        except Exception:  # noqa: BLE001 - teardown must not raise
            pass
        if self._transport is not None:
            try:
                self._transport.close()
            except Exception:  # noqa: BLE001
                pass
            self._transport = None

    @property
    def alive(self) -> bool:
        """True when the box is started and its worker has not failed."""
        return self._started and self._broken is None

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):  # last resort: never leak a worker
        try:
            if self._started:
                self._kill()
        except Exception:  # noqa: BLE001
            pass

    # ----- protocol
    def _recv(self, deadline: float) -> dict:
        assert self._transport is not None
        (n,) = _HDR.unpack(self._transport.recv_exact(4, deadline))
        if n > _MAX_REPLY:
            raise WorkerDied(f"worker sent an oversized frame ({n} bytes)")
        try:
            obj = json.loads(self._transport.recv_exact(n, deadline).decode("utf-8", "surrogatepass"))
        except ValueError as e:
            raise WorkerDied(f"worker sent a malformed frame ({e})") from None
        if not isinstance(obj, dict):
            raise WorkerDied("worker sent a malformed frame")
        return obj

    def _call(self, req: dict, deadline: float) -> dict:
        if self._transport is None:
            raise WorkerDied("the sandbox is not running")
        body = json.dumps(req, ensure_ascii=False).encode("utf-8", "surrogatepass")
        self._transport.send(_HDR.pack(len(body)) + body, deadline)
        reply = self._recv(deadline)
        spids = reply.pop("spids", None)
        if isinstance(spids, list):
            self._session_pids = [p for p in spids if isinstance(p, int) and p > 1]
        return reply

    def _request(self, req: dict, timeout: float) -> dict:
        """Send one request with a host-side watchdog; on failure kill the box, raise WorkerDied."""
        with self._lock:
            if not self._started:
                if self._broken is not None:
                    raise WorkerDied(f"the sandbox failed earlier ({self._broken}); start() it again")
                try:
                    self.start()
                except SandboxInfraError as e:
                    raise WorkerDied(str(e)) from None
            try:
                return self._call(req, time.monotonic() + timeout)
            except WorkerDied as e:
                diag = self._transport.diagnostics() if self._transport else ""
                self._broken = str(e) + (f"; worker stderr: {diag}" if diag else "")
                self._kill()
                raise WorkerDied(self._broken) from None

    def _run(self, sid: int, code: str, timeout: Optional[float]) -> ExecResult:
        t0 = time.monotonic()
        if not isinstance(code, str):
            return ExecResult(stderr=f"[sandbox] code must be a str, not {type(code).__name__}\n", exit=1,
                              error_kind="exception")
        try:
            timeout = float(self.limits.timeout if timeout is None else timeout)
        except (TypeError, ValueError):
            return ExecResult(stderr=f"[sandbox] bad timeout {timeout!r}\n", exit=1, error_kind="exception")
        if not timeout > 0:
            timeout = self.limits.timeout
        # the CPU limit is a backstop behind the wall clock (SIGINT, then SIGKILL after a grace):
        # by default it must not fire first, or code that ignores SIGINT races the kill
        cpu = self.limits.cpu_seconds or timeout + 2.0
        req = {"op": "run", "sid": sid, "code": code, "timeout": timeout, "cpu": cpu}
        try:
            # worker budget: the wall limit, the SIGINT grace, the sweep and a margin
            reply = self._request(req, timeout + 5.0)
        except WorkerDied as e:
            return ExecResult.infra(str(e), time.monotonic() - t0)
        if "error" in reply:
            return ExecResult.infra(str(reply["error"]), time.monotonic() - t0)
        kind = reply.get("error_kind")
        return ExecResult(
            stdout=str(reply.get("stdout", "")),
            stderr=str(reply.get("stderr", "")),
            exit=int(reply.get("exit", 0)),
            duration=float(reply.get("duration", time.monotonic() - t0)),
            truncated=bool(reply.get("truncated", False)),
            error_kind=kind if kind in ERROR_KINDS else "exception",
            restarted=bool(reply.get("restarted", False)),
        )

    # ----- public API
    def run(self, code: str, timeout: Optional[float] = None) -> ExecResult:
        """Run ``code`` in the default REPL session; variables persist between calls.

        If the last statement is an expression its ``repr`` is printed, as in a REPL. Never
        raises for sandbox failures: they come back with ``error_kind="infra"``.
        """
        return self._run(0, code, timeout)

    async def arun(self, code: str, timeout: Optional[float] = None) -> ExecResult:
        """``run`` for asyncio callers (runs in a thread)."""
        import asyncio

        return await asyncio.to_thread(self.run, code, timeout)

    def session(self) -> "Session":
        """Open a new, empty REPL session in this box (forked from the warm fork-server)."""
        sid = next(self._sids)
        try:
            reply = self._request({"op": "new", "sid": sid}, 10.0)
        except WorkerDied as e:
            raise SandboxInfraError(f"could not open a session: {e}") from None
        if not reply.get("ok"):
            raise SandboxInfraError(f"could not open a session: {reply.get('error')}")
        return Session(self, sid)

    def fork(self) -> "Session":
        """A new session whose globals are a copy of the default session's."""
        return self.default.fork()

    def reset(self) -> None:
        """Kill every session, empty the work dir and open a fresh default session."""
        try:
            self._request({"op": "reset"}, 10.0)
            reply = self._request({"op": "new", "sid": 0}, 10.0)
        except WorkerDied as e:
            raise SandboxInfraError(f"reset failed: {e}") from None
        if not reply.get("ok"):
            raise SandboxInfraError(f"reset failed: {reply.get('error')}")
        self.default = Session(self, 0)

    def ping(self, timeout: float = 5.0) -> bool:
        """True if the worker answers within ``timeout`` seconds."""
        try:
            return bool(self._request({"op": "ping"}, timeout).get("ok"))
        except WorkerDied:
            return False

    def put_file(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` under the work dir (written by the worker, no symlinks)."""
        if isinstance(data, str):
            data = data.encode()
        try:
            reply = self._request({"op": "put", "path": str(path), "data": base64.b64encode(data).decode()}, 30.0)
        except WorkerDied as e:
            raise SandboxInfraError(f"put_file failed: {e}") from None
        if not reply.get("ok"):
            raise SandboxError(f"put_file({path!r}) failed: {reply.get('error')}")

    def get_file(self, path: str, limit: int = 16 * 1024 * 1024) -> bytes:
        """Read a file from the work dir. Symlinks (any component), ``..`` and hard-linked files
        are refused, so a snippet cannot trick the host into reading host files."""
        try:
            reply = self._request({"op": "get", "path": str(path), "limit": int(limit)}, 30.0)
        except WorkerDied as e:
            raise SandboxInfraError(f"get_file failed: {e}") from None
        if not reply.get("ok"):
            raise SandboxError(f"get_file({path!r}) refused: {reply.get('error')}")
        return base64.b64decode(reply["data"])

    def __repr__(self) -> str:
        state = "running" if self.alive else ("broken" if self._broken else "stopped")
        return f"<{type(self).__name__} backend={self.backend!r} {state}>"


class Session:
    """One persistent REPL inside a :class:`Sandbox`; globals survive between :meth:`run` calls."""

    def __init__(self, sandbox: Sandbox, sid: int):
        self.sandbox = sandbox
        self.sid = sid
        self.closed = False

    def run(self, code: str, timeout: Optional[float] = None) -> ExecResult:
        """Run ``code`` in this session (see :meth:`Sandbox.run`)."""
        if self.closed:
            return ExecResult(stderr="[sandbox] this session is closed\n", exit=1, error_kind="exception")
        return self.sandbox._run(self.sid, code, timeout)

    async def arun(self, code: str, timeout: Optional[float] = None) -> ExecResult:
        """``run`` for asyncio callers."""
        import asyncio

        return await asyncio.to_thread(self.run, code, timeout)

    def fork(self) -> "Session":
        """A new session in the same box whose globals are a copy of this one's (``os.fork``)."""
        sid = next(self.sandbox._sids)
        try:
            reply = self.sandbox._request({"op": "fork", "src": self.sid, "sid": sid}, 15.0)
        except WorkerDied as e:
            raise SandboxInfraError(f"fork failed: {e}") from None
        if not reply.get("ok"):
            raise SandboxInfraError(f"fork failed: {reply.get('error')}")
        return Session(self.sandbox, sid)

    def close(self) -> None:
        """Kill this session's process (and its children); never raises."""
        if self.closed:
            return
        self.closed = True
        if self.sid == 0:
            return
        try:
            self.sandbox._request({"op": "close", "sid": self.sid}, 10.0)
        except WorkerDied:
            pass

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Session {self.sid} of {self.sandbox!r}>"


# --------------------------------------------------------------------------- helpers for backends
def spawn_worker(argv: list, *, env: Optional[dict] = None, cwd: Optional[str] = None,
                 preexec_fn=None, **popen_kw: Any) -> PipeTransport:
    """Start ``argv`` with pipes on stdin/stdout and stderr in an unlinked temp file."""
    errfile = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errfile,
                                env=env if env is not None else {}, cwd=cwd, close_fds=True,
                                start_new_session=True, preexec_fn=preexec_fn, **popen_kw)
    except OSError:
        errfile.close()
        raise
    return PipeTransport(proc, errfile)


def kill_process_group(proc: Optional[subprocess.Popen], wait: float = 5.0) -> None:
    """SIGKILL a worker's whole process group and reap it (bounded wait, never raises)."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.kill()
    except OSError:
        pass
    try:
        proc.wait(timeout=wait)
    except (subprocess.TimeoutExpired, OSError):
        pass
