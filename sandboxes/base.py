"""The sandbox protocol shared by every backend: limits, results, sessions, the host channel.

A :class:`Sandbox` is one isolated *box* (a bubblewrap namespace set, a container, or a plain
process group) running the fork-server of :mod:`rao_envs.sandboxes.worker`. Inside a box, each
REPL *session* is a process forked from that pre-imported interpreter; its globals survive
between :meth:`Session.run` calls. ``Sandbox.run`` uses the box's default session.

Nothing user code does makes :meth:`Sandbox.run` raise: the code's own failures come back
typed (``error_kind`` ``"exception"``, ``"memory"``, ``"timeout"``, ``"crashed"``), and only a
failure of the sandbox itself is ``"infra"`` (call :meth:`ExecResult.raise_for_infra` inside a
task tool to hand it to the engine, DESIGN §1.8). Only set-up problems a user must fix raise
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
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

# the engine's error classes, so a task tool can re-raise our errors unchanged
from rao_envs.errors import ConfigError, InfraError, RaoEnvsError, ToolError

__all__ = [
    "AGENT_ERROR_KINDS",
    "ERROR_KINDS",
    "ExecResult",
    "ResourceLimits",
    "Sandbox",
    "Session",
    "SandboxError",
    "SandboxInfraError",
    "SandboxRefused",
    "SandboxUnavailable",
    "SandboxConfigError",
]

_HDR = struct.Struct(">I")
_MAX_REPLY = 64 * 1024 * 1024
_MAX_REQUEST = 64 * 1024 * 1024  # the worker's frame limit (code, put_file data)
_MAX_AHEAD = 16 * 1024  # bytes of one request sent without waiting for its reply
_AHEAD = 3  # requests in flight at most: their bytes stay under any channel's buffer, so a send never blocks
ERROR_KINDS = (None, "exception", "memory", "timeout", "crashed", "infra")
AGENT_ERROR_KINDS = ("exception", "memory", "timeout", "crashed")  # the code's fault: train on them


# --------------------------------------------------------------------------- errors
class SandboxError(Exception):
    """Base class of every error raised by :mod:`rao_envs.sandboxes`."""


class SandboxUnavailable(SandboxError, RaoEnvsError):
    """The backend cannot run on this machine; the message says what to install or use instead."""


class SandboxConfigError(SandboxError, ConfigError):
    """Bad arguments to :func:`make_sandbox` or a backend (unknown limit, wrong type)."""


class SandboxRefused(SandboxError, ToolError):
    """A file or session request that the code in the box made impossible: ``get_file`` of a
    missing file, a FIFO, a symlink or hard link, a file over the limit; ``put_file`` over one;
    ``fork`` of a session the code broke.

    Subclasses ``rao_envs.errors.ToolError``: raised from a task tool it becomes the agent's
    feedback (an agent failure), never an ``infra_error`` node.
    """


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

    Where the backend has tmpfs mounts (``local``, ``docker``), ``/tmp`` and ``/dev/shm`` are
    each capped at ``min(disk_mb, 64)`` MiB and all of them together at ``disk_mb * 1024``
    files and directories; ``/dev`` is read-only.
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

    def disk_bytes(self, cap_mb: Optional[float] = None) -> int:
        """The work dir's size in bytes (``disk_mb``, 64 MiB when 0), at most ``cap_mb``."""
        mb = self.disk_mb or 64
        if cap_mb is not None:
            mb = min(mb, cap_mb)
        return int(max(1, mb) * 1024 * 1024)

    def box_memory_bytes(self) -> int:
        """The box-wide memory cgroup: ``memory_mb`` twice (sessions are forks of a shared
        interpreter) plus 128 MiB for the interpreters, plus every tmpfs byte (the work dir,
        ``/tmp`` and ``/dev/shm`` are RAM charged to the same cgroup), so files alone cannot
        starve the fork-server."""
        mb = (self.memory_mb or 1024) * 2 + 128
        return int(mb * 1024 * 1024) + self.disk_bytes() + 2 * self.disk_bytes(64)

    def file_count(self) -> int:
        """Files and directories the box's tmpfs mounts may hold together: 1024 per MiB of disk."""
        return int(max(1, self.disk_mb or 64) * 1024)

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
    one of ``"exception"`` (the code raised, did not compile or was not valid text),
    ``"memory"`` (MemoryError / memory limit / the kernel's OOM killer), ``"timeout"`` (wall
    or CPU limit), ``"crashed"`` (the session process died or had to be killed; it was
    restarted, earlier variables are gone) — all four are the code's own failures
    (:data:`AGENT_ERROR_KINDS`) — or ``"infra"`` (the sandbox itself failed, not the code).
    ``truncated`` is True when stdout or stderr hit the output cap; ``restarted`` when the
    session (or, after ``"memory"`` took the box down, the whole box) starts fresh.
    """

    stdout: str = ""
    stderr: str = ""
    exit: int = 0
    duration: float = 0.0
    truncated: bool = False
    error_kind: Optional[str] = None
    restarted: bool = False
    #: code mode: the run stopped at a host call (its JSON text, untrusted); answer with the next run
    hostcall: Optional[str] = None

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
    """The worker process closed its channel, timed out or sent garbage (internal).

    ``agent`` is an agent error kind (e.g. ``"memory"``) when the backend can tell that user
    code brought the box down (the kernel's OOM killer), else None (an infrastructure failure).
    """

    def __init__(self, message: str, agent: Optional[str] = None):
        super().__init__(message)
        self.agent = agent


class Transport:
    """A byte channel to one worker: ``send`` and ``recv_exact`` with deadlines.

    ``send`` is shared: a subclass says what ``select`` waits on (:meth:`_writable`) and does
    one non-blocking write (:meth:`_write_some`); ``peer`` and ``channel`` name the other end
    and the channel in error messages.
    """

    peer: ClassVar[str] = "worker"
    channel: ClassVar[str] = "worker pipe"

    def send(self, data: bytes, deadline: float) -> None:
        """Write all of ``data`` before ``deadline`` (non-blocking writes; ``select`` only while
        the channel is full) or raise :class:`WorkerDied`."""
        view = memoryview(data)
        while view:
            try:
                view = view[self._write_some(view):]
            except BlockingIOError:
                pass
            except OSError as e:
                raise WorkerDied(f"{self.channel} closed ({e})") from None
            if not view:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerDied(f"timed out writing to the {self.peer}")
            select.select([], [self._writable()], [], left)

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
    """Channel over a subprocess's stdin/stdout pipes. Its stderr is a third pipe, drained into
    a small ring buffer while we wait for replies (no host file sits behind any of the box's
    fds, and a chatty worker can neither fill a disk nor block on a full pipe for long)."""

    _KEEP = 4096

    def __init__(self, proc: subprocess.Popen, errfile=None):
        self.proc = proc
        self.wfd = proc.stdin.fileno()
        self.rfd = proc.stdout.fileno()
        self.efd = proc.stderr.fileno() if proc.stderr is not None else -1
        self.err = bytearray()
        self.buf = bytearray()  # bytes read ahead of the current frame
        os.set_blocking(self.wfd, False)
        if self.efd >= 0:
            os.set_blocking(self.efd, False)

    def _drain_err(self) -> None:
        while self.efd >= 0:
            try:
                chunk = os.read(self.efd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.efd = -1
                return
            self.err += chunk
            del self.err[:-self._KEEP]

    def _writable(self) -> int:
        """The worker's stdin pipe (non-blocking)."""
        return self.wfd

    def _write_some(self, view: memoryview) -> int:
        """``os.write`` to the worker's stdin pipe."""
        return os.write(self.wfd, view)

    def recv_exact(self, n: int, deadline: float) -> bytes:
        """Read with a deadline; EOF means the worker died. Reads ahead (a reply's header and
        body mostly come in one read): what is past ``n`` bytes waits for the next call."""
        buf = self.buf
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerDied("timed out waiting for the worker's reply")
            r, _, _ = select.select([self.rfd] + ([self.efd] if self.efd >= 0 else []), [], [], left)
            if self.efd in r:
                self._drain_err()
            if self.rfd not in r:
                continue
            chunk = os.read(self.rfd, max(n - len(buf), 65536))
            if not chunk:
                raise WorkerDied("worker closed its channel (it died or was killed)")
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def wait_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until the worker's end of the channel is closed (every
        process holding it is gone); True if it is. What arrives meanwhile is dropped: meant for
        a worker being killed (a request in flight fails with :class:`WorkerDied` either way)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.rfd], [], [], left)
            try:
                if r and not os.read(self.rfd, 65536):
                    return True
            except OSError:
                return True

    def close(self) -> None:
        """Close our ends of the pipes."""
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        self.efd = -1

    def diagnostics(self) -> str:
        """Last 2 KiB the worker (or bwrap) wrote to stderr."""
        self._drain_err()
        return self.err[-2048:].decode("utf-8", "replace").strip()


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
class _Pending:
    """A request sent without waiting for its reply (see :meth:`Sandbox._submit`): ``reply`` once
    read, ``error`` if the box died first."""

    __slots__ = ("timeout", "reply", "error")

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.reply: Optional[dict] = None
        self.error: Optional[str] = None


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
        self.seccomp: Optional[bool] = None  # whether sessions run under the worker's seccomp filter
        self._epoch = 0  # bumped by start() and reset(): Session handles of earlier episodes go stale
        self._pending: list = []  # requests sent ahead, oldest first; their replies come first
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

    def _agent_cause(self) -> Optional[str]:
        """Called when the box or a session died: an agent error kind if the backend can tell
        user code caused it (e.g. ``"memory"``: the box's cgroup saw an OOM kill), else None."""
        return None

    # ----- lifecycle
    # the worker's hardening: "require" (refuse to start without it), True (best effort), False
    seccomp_mode: ClassVar[Any] = True

    def _scratch(self) -> list:
        """Writable tmpfs mounts of the box besides the work dir (wiped by reset, file-capped)."""
        return []

    def _config(self) -> dict:
        scratch = self._scratch()
        return {
            "limits": self.limits.worker_config(),
            "pidns": self.pid_namespace,
            "workdir": self._workdir(),
            "preload": list(self.preload),
            "seccomp": self.seccomp_mode,
            "scratch": scratch,
            # files + directories in all tmpfs mounts together: inodes cost kernel memory that
            # no size= counts, so they get their own cap, 1 per KiB of disk_mb (the kernel's
            # own accounting unit for unlimited tmpfs inodes)
            "inode_cap": self.limits.file_count() if scratch else 0,
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
                self.seccomp = hello.get("seccomp")
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
            self._epoch += 1
            self.default = Session(self, 0)
            return self

    def stop(self) -> None:
        """Kill the box and everything in it (idempotent, never raises)."""
        with self._lock:
            self._kill()

    def _kill(self) -> None:
        self._started = False
        for h in self._pending:
            h.error = "the sandbox stopped before it answered"
        self._pending = []
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
            obj = json.loads(self._transport.recv_exact(n, deadline).decode("ascii"))
        except ValueError as e:
            raise WorkerDied(f"worker sent a malformed frame ({e})") from None
        if not isinstance(obj, dict):
            raise WorkerDied("worker sent a malformed frame")
        return obj

    def _reply(self, deadline: float) -> dict:
        reply = self._recv(deadline)
        spids = reply.pop("spids", None)
        if isinstance(spids, list):
            self._session_pids = [p for p in spids if isinstance(p, int) and p > 1]
        return reply

    def _settle(self) -> None:
        """Read the replies of the requests sent ahead (the worker answers in order)."""
        while self._pending:
            h = self._pending[0]
            h.reply = self._reply(time.monotonic() + h.timeout)
            self._pending.pop(0)

    def _body(self, req: dict, limit: int) -> bytes:
        body = json.dumps(req).encode("ascii")  # pure ASCII: lone surrogates travel escaped
        if len(body) > limit:
            raise ValueError(f"request of {len(body)} bytes is over the {limit}-byte limit")
        return _HDR.pack(len(body)) + body

    def _call(self, req: dict, deadline: float) -> dict:
        if self._transport is None:
            raise WorkerDied("the sandbox is not running")
        data = self._body(req, _MAX_REQUEST)
        self._settle()
        self._transport.send(data, deadline)
        return self._reply(deadline)

    def _died(self, e: WorkerDied) -> WorkerDied:
        """Kill the box after a failed exchange; the error to raise (``agent`` set when user code took it down)."""
        diag = self._transport.diagnostics() if self._transport else ""
        try:
            cause = self._agent_cause()
        except Exception:  # noqa: BLE001 - a diagnosis must not turn into a crash
            cause = None
        self._broken = str(e) + (f"; worker stderr: {diag}" if diag else "")
        self._kill()
        if cause is not None:  # user code took the box down: a fresh one on the next call
            msg, self._broken = self._broken, None
            return WorkerDied(msg, agent=cause)
        return WorkerDied(self._broken)

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
                raise self._died(e) from None

    def _submit(self, req: dict, timeout: float) -> _Pending:
        """Send a small request (under 16 KiB) without waiting for its reply: the worker carries it
        out while the host goes on, and its reply is read before the next request's (or by
        :meth:`_wait`). For work that can be done ahead (forking the next session, closing a
        finished one). Never raises: a failure is in the handle's ``error``. The box must be
        running (nothing is sent ahead to a box that is not)."""
        h = _Pending(timeout)
        with self._lock:
            if not self._started or self._transport is None:
                h.error = "the sandbox is not running"
                return h
            try:
                data = self._body(req, _MAX_AHEAD)
                if len(self._pending) >= _AHEAD:
                    self._settle()
                self._transport.send(data, time.monotonic() + timeout)
                self._pending.append(h)
            except ValueError as e:
                h.error = str(e)
            except WorkerDied as e:
                h.error = str(self._died(e))
        return h

    def _wait(self, h: _Pending) -> dict:
        """The reply of a request sent ahead; raises :class:`WorkerDied` if the box died first."""
        with self._lock:
            if h in self._pending:
                try:
                    self._settle()
                except WorkerDied as e:
                    raise self._died(e) from None
        if h.error is not None:
            raise WorkerDied(h.error)
        assert h.reply is not None
        return h.reply

    def _run_request(self, sid: int, code: str, timeout: Optional[float]) -> dict | ExecResult:
        """The worker's ``run`` request for ``code`` in session ``sid``, or the error result of bad arguments."""
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
        return {"op": "run", "sid": sid, "code": code, "timeout": timeout, "cpu": cpu}

    def _run(self, sid: int, code: str, timeout: Optional[float]) -> ExecResult:
        t0 = time.monotonic()
        req = self._run_request(sid, code, timeout)
        if isinstance(req, ExecResult):
            return req
        timeout = req["timeout"]
        try:
            # worker budget: the wall limit, the SIGINT grace, the sweep and a margin
            reply = self._request(req, timeout + 5.0)
        except WorkerDied as e:
            if e.agent is not None:
                return ExecResult(stderr=f"[sandbox] the code brought the whole sandbox down ({e.agent}); "
                                         "a fresh sandbox starts with the next call, all state is gone\n",
                                  exit=-9, duration=time.monotonic() - t0, error_kind=e.agent, restarted=True)
            return ExecResult.infra(str(e), time.monotonic() - t0)
        except ValueError as e:  # e.g. a program over the request limit: the code's problem
            return ExecResult(stderr=f"[sandbox] {e}\n", exit=1, error_kind="exception")
        if "error" in reply:
            return ExecResult.infra(str(reply["error"]), time.monotonic() - t0)
        try:
            return self._result(reply, t0)
        except Exception as e:  # noqa: BLE001 - run() never raises; a malformed reply is ours
            return ExecResult.infra(f"malformed reply from the worker ({type(e).__name__}: {e})",
                                    time.monotonic() - t0)

    def _result(self, reply: dict, t0: float) -> ExecResult:
        kind = reply.get("error_kind")
        if kind not in ERROR_KINDS or kind == "infra":
            kind = "exception"
        exit_code = reply.get("exit", 0)
        if not isinstance(exit_code, int):
            raise ValueError(f"exit {exit_code!r}")
        stdout, stderr = reply.get("stdout", ""), reply.get("stderr", "")
        if not isinstance(stdout, str) or not isinstance(stderr, str):
            raise ValueError("stdout/stderr not text")
        if kind == "crashed" and exit_code == -9 and self._agent_cause() == "memory":
            kind = "memory"  # the box's cgroup OOM-killed the session
            stderr += "[sandbox] the session was killed for running out of memory\n"
        return ExecResult(
            stdout=stdout,
            stderr=stderr,
            exit=exit_code,
            duration=float(reply.get("duration", time.monotonic() - t0)),
            truncated=bool(reply.get("truncated", False)),
            error_kind=kind,
            restarted=bool(reply.get("restarted", False)),
            hostcall=reply["hostcall"] if isinstance(reply.get("hostcall"), str) else None,
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

    def fork(self, wait: bool = True, warm: Optional[str] = None) -> "Session":
        """A new session whose globals are a copy of the default session's (see :meth:`Session.fork`)."""
        return self.default.fork(wait, warm)

    def reset(self) -> None:
        """Make the box indistinguishable from a fresh one for the next episode: kill every
        session and process, wipe the work dir, ``/tmp`` and ``/dev/shm``, open a fresh default
        session. A box that cannot be wiped clean (or has died) is replaced by a new one.
        Session handles from before the reset go stale. Raises :class:`SandboxInfraError` only
        if no box can be started."""
        with self._lock:
            clean = False
            if self.alive:
                try:
                    reply = self._request({"op": "reset"}, 30.0)
                    clean = bool(reply.get("ok")) and reply.get("clean") is True
                except WorkerDied:
                    clean = False
            if clean:
                self._epoch += 1
                self._sids = itertools.count(1)
                self.default = Session(self, 0)
                return
            self._kill()  # replace the box: a brand-new one is fresh by construction
            self._broken = None
            self.start()

    def ping(self, timeout: float = 5.0) -> bool:
        """True if the worker answers within ``timeout`` seconds."""
        try:
            return bool(self._request({"op": "ping"}, timeout).get("ok"))
        except WorkerDied:
            return False

    def put_file(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` under the work dir (written by the worker, no symlinks).
        Raises :class:`SandboxRefused` when what the code left there prevents it (a FIFO, a
        symlink, a hard link, a full disk)."""
        if isinstance(data, str):
            data = data.encode()
        try:
            reply = self._request({"op": "put", "path": str(path), "data": base64.b64encode(data).decode()}, 30.0)
        except WorkerDied as e:
            raise SandboxInfraError(f"put_file failed: {e}") from None
        except ValueError as e:  # over the request limit
            raise SandboxError(f"put_file({path!r}) failed: {e}") from None
        if not reply.get("ok"):
            raise SandboxRefused(f"put_file({path!r}) failed: {reply.get('error')}")

    def get_file(self, path: str, limit: int = 16 * 1024 * 1024) -> bytes:
        """Read a file from the work dir. Symlinks (any component), ``..``, hard-linked files and
        anything but a plain file (a FIFO cannot stall the read) are refused, so a snippet
        cannot trick the host into reading host files; refusals and missing files raise
        :class:`SandboxRefused` (the code's doing: agent feedback inside a task tool)."""
        try:
            reply = self._request({"op": "get", "path": str(path), "limit": int(limit)}, 30.0)
        except WorkerDied as e:
            raise SandboxInfraError(f"get_file failed: {e}") from None
        if not reply.get("ok"):
            raise SandboxRefused(f"get_file({path!r}) refused: {reply.get('error')}")
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
        self.epoch = sandbox._epoch
        self._created: Optional[_Pending] = None  # the fork that makes this session, sent ahead

    @property
    def stale(self) -> bool:
        """True once the sandbox was reset or restarted: this handle belongs to an earlier episode."""
        return self.epoch != self.sandbox._epoch

    def run(self, code: str, timeout: Optional[float] = None, wait: bool = True) -> Optional[ExecResult]:
        """Run ``code`` in this session (see :meth:`Sandbox.run`). With ``wait=False`` the code
        (under 16 KiB, printing little) is sent ahead and ``None`` returned at once: it runs while
        the host goes on, and its outcome is discarded (for warming a session up)."""
        if self.closed:
            return ExecResult(stderr="[sandbox] this session is closed\n", exit=1, error_kind="exception")
        if self.stale and self.sid != 0:
            return ExecResult(stderr="[sandbox] this session belongs to an earlier episode (the sandbox was "
                                     "reset)\n", exit=1, error_kind="exception")
        if not wait:
            req = self.sandbox._run_request(self.sid, code, timeout)
            if isinstance(req, dict):
                self.sandbox._submit(req, req["timeout"] + 5.0)
            return None
        if self._created is not None:
            failed = self._fork_failure()
            if failed is not None:
                return failed
        return self.sandbox._run(self.sid, code, timeout)

    def _fork_failure(self) -> Optional[ExecResult]:
        """For a session forked with ``wait=False``: None once the fork is known to have worked,
        else the error result (and the session is closed)."""
        h, self._created = self._created, None
        try:
            reply = self.sandbox._wait(h)
        except WorkerDied as e:
            self.closed = True
            return ExecResult.infra(f"fork failed: {e}")
        if reply.get("ok"):
            return None
        self.closed = True  # a run sent ahead may have opened an empty session under this id: close it
        self.sandbox._submit({"op": "close", "sid": self.sid}, 10.0)
        if reply.get("agent"):
            return ExecResult(stderr=f"[sandbox] fork failed: {reply.get('error')}\n", exit=1, error_kind="exception")
        return ExecResult.infra(f"fork failed: {reply.get('error')}")

    async def arun(self, code: str, timeout: Optional[float] = None) -> ExecResult:
        """``run`` for asyncio callers."""
        import asyncio

        return await asyncio.to_thread(self.run, code, timeout)

    def fork(self, wait: bool = True, warm: Optional[str] = None) -> "Session":
        """A new session in the same box whose globals are a copy of this one's (``os.fork``).

        Raises :class:`SandboxRefused` if the session's own state prevents the fork (its code
        broke the session), :class:`SandboxInfraError` if the sandbox failed. With
        ``wait=False`` the fork is sent ahead and the new session returned at once: the box
        forks while the host goes on, and a failure comes back as the result of the new
        session's first :meth:`run` (refused: ``error_kind="exception"``; else ``infra``).
        ``warm``: code the new session runs before it is handed over, output discarded and
        errors ignored (host code, kept short: a fresh fork pays for each page it first writes,
        and a warm-up that touches what the first call will touch takes that cost ahead)."""
        if self.stale and self.sid != 0:
            raise SandboxError("this session belongs to an earlier episode (the sandbox was reset)")
        sid = next(self.sandbox._sids)
        req = {"op": "fork", "src": self.sid, "sid": sid}
        if warm is not None:
            req["warm"] = warm
        if not wait:
            s = Session(self.sandbox, sid)
            s._created = self.sandbox._submit(req, 15.0)
            return s
        try:
            reply = self.sandbox._request(req, 15.0)
        except WorkerDied as e:
            raise SandboxInfraError(f"fork failed: {e}") from None
        if not reply.get("ok"):
            if reply.get("agent"):
                raise SandboxRefused(f"fork failed: {reply.get('error')}")
            raise SandboxInfraError(f"fork failed: {reply.get('error')}")
        return Session(self.sandbox, sid)

    def close(self, wait: bool = True) -> None:
        """Kill this session's process (and its children); never raises. With ``wait=False`` the
        close is sent ahead (the box does it while the host goes on)."""
        if self.closed:
            return
        self.closed = True
        if self.sid == 0:
            return
        if not wait:
            self.sandbox._submit({"op": "close", "sid": self.sid}, 10.0)
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
    """Start ``argv`` with pipes on stdin, stdout and stderr (no file behind any of them)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env if env is not None else {}, cwd=cwd, close_fds=True,
                            start_new_session=True, preexec_fn=preexec_fn, **popen_kw)
    return PipeTransport(proc)


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
