"""A pool of warm sandboxes handed to many concurrent episodes.

Each episode takes a whole box (its own namespaces, uid and work dir) with :meth:`acquire` or
``with pool.sandbox() as sb:``; on release the box is reset (sessions killed, work dir wiped, a
fresh default session forked) and reused, or, if it failed, stopped and replaced in the
background so the next episode still gets a warm one.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import Iterator, Optional

from .base import ExecResult, Sandbox, SandboxInfraError


class SandboxPool:
    """Keeps ``size`` started sandboxes ready; at most ``max_size`` exist at once.

    ``backend`` and ``kwargs`` go to :func:`rao_envs.sandboxes.make_sandbox`. Thread-safe; use
    from asyncio with ``asyncio.to_thread``. Call :meth:`close` (or use ``with``) when done.
    """

    def __init__(self, backend: Optional[str] = None, size: int = 2, max_size: Optional[int] = None,
                 **kwargs):
        from . import make_sandbox

        if size < 0:
            raise ValueError("size must be >= 0")
        self.backend = backend
        self.kwargs = kwargs
        self.size = size
        self.max_size = max(max_size or max(size, 1) * 4, size, 1)
        self._make = lambda: make_sandbox(backend, **kwargs)
        self._make()  # validate arguments / availability now, not in a background thread
        self._cond = threading.Condition()
        self._idle: collections.deque = collections.deque()
        self._total = 0  # started + starting + in use
        self._closed = False
        self._filler: Optional[threading.Thread] = None
        self.stats = {"started": 0, "reused": 0, "replaced": 0, "start_failures": 0}
        self.last_error: Optional[str] = None

    # ----- lifecycle
    def start(self, wait: bool = True) -> "SandboxPool":
        """Start the background filler; with ``wait`` block until ``size`` boxes are warm."""
        with self._cond:
            if self._filler is None:
                self._filler = threading.Thread(target=self._fill_loop, name="rao-sandbox-pool", daemon=True)
                self._filler.start()
            self._cond.notify_all()
        if wait:
            deadline = time.monotonic() + 120
            with self._cond:
                while len(self._idle) < self.size and time.monotonic() < deadline and not self._closed:
                    if self.stats["start_failures"] and self.last_error and not self._idle and self._total == 0:
                        raise SandboxInfraError(f"sandbox pool could not start a box: {self.last_error}")
                    self._cond.wait(0.1)
        return self

    def close(self) -> None:
        """Stop every idle box; boxes still in use are stopped when released."""
        with self._cond:
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            self._total -= len(idle)
            self._cond.notify_all()
        for sb in idle:
            sb.stop()

    def __enter__(self) -> "SandboxPool":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- filler
    def _fill_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not (len(self._idle) < self.size and self._total < self.max_size):
                    self._cond.wait()
                if self._closed:
                    return
                self._total += 1
            sb = self._new_box()
            with self._cond:
                if sb is None:
                    self._total -= 1
                    self._cond.notify_all()
                    self._cond.wait(1.0)  # back off after a failed start
                    continue
                if self._closed:
                    self._total -= 1
                else:
                    self._idle.append(sb)
                    sb = None
                self._cond.notify_all()
            if sb is not None:
                sb.stop()

    def _new_box(self) -> Optional[Sandbox]:
        try:
            sb = self._make().start()
        except Exception as e:  # noqa: BLE001 - reported through stats/last_error and acquire()
            self.stats["start_failures"] += 1
            self.last_error = f"{type(e).__name__}: {e}"
            return None
        self.stats["started"] += 1
        return sb

    # ----- acquire / release
    def acquire(self, timeout: Optional[float] = 60.0) -> Sandbox:
        """Take a warm sandbox (starting one if none is idle and ``max_size`` allows).

        Raises :class:`SandboxInfraError` if none can be had within ``timeout`` seconds.
        """
        if self._filler is None:
            self.start(wait=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise SandboxInfraError("the sandbox pool is closed")
                if self._idle:
                    sb = self._idle.popleft()
                    self._cond.notify_all()  # let the filler top up
                    return sb
                if self._total < self.max_size:
                    self._total += 1
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise SandboxInfraError(f"no sandbox free within {timeout}s (max_size={self.max_size})")
                self._cond.wait(left)
        sb = self._new_box()
        if sb is None:
            with self._cond:
                self._total -= 1
                self._cond.notify_all()
            raise SandboxInfraError(f"could not start a sandbox: {self.last_error}")
        return sb

    def release(self, sb: Sandbox) -> None:
        """Give a sandbox back: reset and keep it if healthy, otherwise stop and replace it."""
        healthy = sb.alive
        if healthy:
            try:
                sb.reset()
            except Exception:  # noqa: BLE001
                healthy = False
        with self._cond:
            if healthy and not self._closed and len(self._idle) < self.max_size:
                self._idle.append(sb)
                self.stats["reused"] += 1
                sb = None
            else:
                self._total -= 1
                if not healthy:
                    self.stats["replaced"] += 1
            self._cond.notify_all()
        if sb is not None:
            sb.stop()

    @contextlib.contextmanager
    def sandbox(self, timeout: Optional[float] = 60.0) -> Iterator[Sandbox]:
        """``with pool.sandbox() as sb:`` acquire a warm sandbox for one episode and release it."""
        sb = self.acquire(timeout)
        try:
            yield sb
        finally:
            self.release(sb)

    def run(self, code: str, timeout: Optional[float] = None) -> ExecResult:
        """One-shot convenience: run ``code`` in a fresh warm sandbox and give it back."""
        try:
            sb = self.acquire()
        except SandboxInfraError as e:
            return ExecResult.infra(str(e))
        try:
            return sb.run(code, timeout)
        finally:
            self.release(sb)

    @property
    def idle(self) -> int:
        """Number of warm boxes waiting."""
        return len(self._idle)

    @property
    def total(self) -> int:
        """Boxes that exist (idle, in use, or starting)."""
        return self._total
