"""Sandbox pools as Ray actors, placed by resources: code runs on CPU nodes, the driver near the GPUs.

    pool = RaySandboxPool("local", actors=4, size=4, actor_options={"num_cpus": 4, "resources": {"sandbox": 1}},
                          timeout=10, memory_mb=512)
    sb = pool.acquire(key=tree_id)      # a RemoteSandbox: the Sandbox API, over Ray
    sb.run("x = 21"); print(sb.run("x * 2").stdout)
    pool.release(sb)

Each actor holds a :class:`~rao_envs.sandboxes.SandboxPool` (warm boxes, reset on release);
a :class:`RemoteSandbox` and its sessions live in one box on one actor, and every ``acquire``
with the same ``key`` (say, a tree id) goes to the same actor, so **a tree's sessions stay on
one pool actor**. **Failures:** when an actor dies (its process or its node), every call on a
box it held comes back as an infrastructure failure (``run`` returns ``error_kind="infra"``;
the others raise :class:`~rao_envs.sandboxes.SandboxInfraError`), so the engine marks those
nodes ``infra_error``; Ray restarts the actor (``max_restarts``) wherever its resources are,
and the next ``acquire`` gets a fresh box from it. Boxes from before the restart stay dead
(``alive`` is False), never silently reconnected to another box.

The handle pickles (actor handles only), so rollout workers can share one pool; set it up in
``worker_setup`` of :class:`~rao_envs.distributed.RayRolloutDriver`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import uuid
from typing import Any, Iterator

from rao_envs.sandboxes import ExecResult, SandboxInfraError, SandboxPool


class PoolHost:
    """What one sandbox pool actor holds: a :class:`SandboxPool` and the boxes and sessions it lent."""

    def __init__(self, backend: str | None, size: int, max_size: int | None, sandbox_kwargs: dict[str, Any]) -> None:
        self.epoch = uuid.uuid4().hex  # changes when Ray restarts the actor: old box ids are dead
        self.pool = SandboxPool(backend, size=size, max_size=max_size, **sandbox_kwargs).start(wait=False)
        self.boxes: dict[int, Any] = {}
        self.sessions: dict[tuple[int, int], Any] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _box(self, epoch: str, box: int):
        if epoch != self.epoch:
            raise SandboxInfraError("the sandbox pool actor holding this sandbox died and was restarted; its sessions are gone")
        sb = self.boxes.get(box)
        if sb is None:
            raise SandboxInfraError(f"sandbox {box} was released or never lent by this pool actor")
        return sb

    def info(self) -> dict[str, Any]:
        """Epoch, pid, node id, boxes lent, idle and total boxes, pool stats."""
        import ray

        return {"epoch": self.epoch, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "lent": len(self.boxes), "idle": self.pool.idle, "total": self.pool.total, "stats": dict(self.pool.stats)}

    def acquire(self, timeout: float | None) -> tuple[str, int]:
        """Lend a warm box; returns ``(epoch, box id)``."""
        sb = self.pool.acquire(timeout)
        with self._lock:
            box = next(self._ids)
            self.boxes[box] = sb
        return self.epoch, box

    def release(self, epoch: str, box: int) -> None:
        """Take a box back (reset and reused, or replaced)."""
        if epoch != self.epoch:
            return
        with self._lock:
            sb = self.boxes.pop(box, None)
            for k in [k for k in self.sessions if k[0] == box]:
                self.sessions.pop(k)
        if sb is not None:
            self.pool.release(sb)

    def run(self, epoch: str, box: int, sid: int, code: str, timeout: float | None) -> ExecResult:
        """Run ``code`` in session ``sid`` (0: the box's default session)."""
        try:
            sb = self._box(epoch, box)
        except SandboxInfraError as exc:
            return ExecResult.infra(str(exc))
        if sid == 0:
            return sb.run(code, timeout)
        session = self.sessions.get((box, sid))
        if session is None:
            return ExecResult(stderr="[sandbox] this session is closed\n", exit=1, error_kind="exception")
        return session.run(code, timeout)

    def session(self, epoch: str, box: int, src: int | None) -> int:
        """Open a new session (``src`` None) or fork session ``src``; returns its id."""
        sb = self._box(epoch, box)
        if src is None:
            s = sb.session()
        elif src == 0:
            s = sb.fork()
        else:
            parent = self.sessions.get((box, src))
            if parent is None:
                raise SandboxInfraError(f"session {src} is closed")
            s = parent.fork()
        self.sessions[(box, s.sid)] = s
        return s.sid

    def close_session(self, epoch: str, box: int, sid: int) -> None:
        """Close session ``sid``; never raises."""
        if epoch == self.epoch:
            s = self.sessions.pop((box, sid), None)
            if s is not None:
                s.close()

    def call(self, epoch: str, box: int, method: str, *args: Any) -> Any:
        """``alive``, ``reset``, ``ping``, ``get_file``, ``put_file`` or ``kill_worker`` on a lent box."""
        if method not in ("alive", "reset", "ping", "get_file", "put_file", "kill_worker"):
            raise SandboxInfraError(f"unknown sandbox method {method!r}")
        if method == "alive":
            try:
                return self._box(epoch, box).alive
            except SandboxInfraError:
                return False
        return getattr(self._box(epoch, box), method)(*args)

    def close(self) -> None:
        """Stop every box (idle and lent)."""
        with self._lock:
            boxes = list(self.boxes.values())
            self.boxes.clear()
            self.sessions.clear()
        for sb in boxes:
            sb.stop()
        self.pool.close()


class RaySandboxPool:
    """``actors`` sandbox pool actors, each with ``size`` warm boxes (module docstring).

    ``actor_options`` are Ray actor options (``num_cpus`` (default 1), ``resources``,
    ``scheduling_strategy``); ``sandbox_kwargs`` go to :func:`~rao_envs.sandboxes.make_sandbox`
    (``timeout``, ``memory_mb``, ...). ``call_timeout`` bounds each call beyond the code's own
    timeout (a call that outlives it is an infrastructure failure).
    """

    def __init__(self, backend: str | None = None, *, actors: int = 1, size: int = 2, max_size: int | None = None,
                 actor_options: dict[str, Any] | None = None, max_restarts: int = -1, call_timeout: float = 120.0,
                 address: str | None = None, **sandbox_kwargs: Any) -> None:
        from rao_envs.distributed.driver import connect

        if actors < 1:
            from rao_envs.errors import ConfigError

            raise ConfigError(f"actors must be at least 1, got {actors}")
        ray = connect(address)
        opts = {"num_cpus": 1, **dict(actor_options or {}), "max_restarts": max_restarts, "max_task_retries": 0,
                "max_concurrency": 64}
        cls = ray.remote(PoolHost)
        self.actors = [cls.options(**opts).remote(backend, size, max_size, dict(sandbox_kwargs)) for _ in range(actors)]
        self.call_timeout = call_timeout
        self._affinity: dict[Any, int] = {}
        self._counts = [0] * actors
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"actors": self.actors, "call_timeout": self.call_timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.actors, self.call_timeout = state["actors"], state["call_timeout"]
        self._affinity, self._counts, self._lock = {}, [0] * len(self.actors), threading.Lock()

    def _slot(self, key: Any) -> int:
        with self._lock:
            if key is not None and key in self._affinity:
                return self._affinity[key]
            slot = min(range(len(self.actors)), key=lambda i: self._counts[i])
            self._counts[slot] += 1
            if key is not None:
                self._affinity[key] = slot
            return slot

    def acquire(self, key: Any = None, timeout: float | None = 60.0) -> RemoteSandbox:
        """A warm box from the actor ``key`` is pinned to (the least used for a new key).

        Raises :class:`~rao_envs.sandboxes.SandboxInfraError` when the actor is down or has no box in time.
        """
        import ray

        slot = self._slot(key)
        actor = self.actors[slot]
        deadline = time.monotonic() + (timeout if timeout is not None else self.call_timeout)
        delay = 0.2
        while True:  # an actor that Ray is restarting answers "unavailable" for a few seconds: wait for it
            try:
                epoch, box = ray.get(actor.acquire.remote(timeout), timeout=(timeout or 0) + self.call_timeout)
                break
            except ray.exceptions.RayActorError as exc:
                if time.monotonic() + delay > deadline:
                    raise SandboxInfraError(f"no sandbox from pool actor {slot}: {_why(exc)}") from None
                time.sleep(delay)
                delay = min(2.0, delay * 2)
            except Exception as exc:  # noqa: BLE001 - no box in time, start failure, call timeout
                raise SandboxInfraError(f"no sandbox from pool actor {slot}: {_why(exc)}") from None
        return RemoteSandbox(self, slot, actor, epoch, box)

    def release(self, sb: RemoteSandbox) -> None:
        """Give a box back to its actor (a no-op if that actor died)."""
        sb._released = True
        try:
            sb.actor.release.remote(sb.epoch, sb.box)
        except Exception:  # noqa: BLE001
            pass

    @contextlib.contextmanager
    def sandbox(self, key: Any = None, timeout: float | None = 60.0) -> Iterator[RemoteSandbox]:
        """``with pool.sandbox(tree_id) as sb:`` acquire a box and release it."""
        sb = self.acquire(key, timeout)
        try:
            yield sb
        finally:
            self.release(sb)

    def run(self, code: str, timeout: float | None = None, key: Any = None) -> ExecResult:
        """One-shot: run ``code`` in a fresh warm box and give it back."""
        try:
            sb = self.acquire(key)
        except SandboxInfraError as exc:
            return ExecResult.infra(str(exc))
        try:
            return sb.run(code, timeout)
        finally:
            self.release(sb)

    def info(self) -> list[dict[str, Any] | None]:
        """Each actor's :meth:`PoolHost.info` (None for an actor that does not answer)."""
        import ray

        out: list[dict[str, Any] | None] = []
        for a in self.actors:
            try:
                out.append(ray.get(a.info.remote(), timeout=self.call_timeout))
            except Exception:  # noqa: BLE001
                out.append(None)
        return out

    def close(self) -> None:
        """Stop every box and kill the actors."""
        import ray

        for a in self.actors:
            try:
                ray.get(a.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001
                pass
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> RaySandboxPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _why(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class RemoteSandbox:
    """One box lent by a pool actor, with the :class:`~rao_envs.sandboxes.Sandbox` API over Ray."""

    def __init__(self, pool: RaySandboxPool, slot: int, actor: Any, epoch: str, box: int) -> None:
        self.pool, self.slot, self.actor, self.epoch, self.box = pool, slot, actor, epoch, box
        self._dead: str | None = None
        self._released = False
        self.default = RemoteSession(self, 0)

    def _get(self, ref: Any, timeout: float | None) -> Any:
        import ray

        try:
            return ray.get(ref, timeout=(timeout or 60.0) + self.pool.call_timeout)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None
        except Exception as exc:  # noqa: BLE001 - the actor died, its node died, or the call hung
            self._dead = f"the sandbox pool actor died ({_why(exc)})"
            raise SandboxInfraError(self._dead) from None

    def run(self, code: str, timeout: float | None = None) -> ExecResult:
        """Run ``code`` in the default session; infrastructure failures come back as ``error_kind="infra"``."""
        return self.default.run(code, timeout)

    async def arun(self, code: str, timeout: float | None = None) -> ExecResult:
        """``run`` for asyncio callers (awaits the actor call)."""
        import asyncio

        return await asyncio.to_thread(self.run, code, timeout)

    def session(self) -> RemoteSession:
        """A new, empty REPL session in this box."""
        if self._dead:
            raise SandboxInfraError(self._dead)
        return RemoteSession(self, self._get(self.actor.session.remote(self.epoch, self.box, None), None))

    def fork(self) -> RemoteSession:
        """A new session whose globals are a copy of the default session's."""
        return self.default.fork()

    def _call(self, method: str, *args: Any, timeout: float | None = 30.0) -> Any:
        if self._dead:
            raise SandboxInfraError(self._dead)
        return self._get(self.actor.call.remote(self.epoch, self.box, method, *args), timeout)

    @property
    def alive(self) -> bool:
        """False once the box or the actor holding it died (or the box was released)."""
        if self._dead or self._released:
            return False
        try:
            return bool(self._call("alive", timeout=5.0))
        except SandboxInfraError:
            return False

    def reset(self) -> None:
        """Reset the box for a new episode (see :meth:`~rao_envs.sandboxes.Sandbox.reset`)."""
        self._call("reset")

    def ping(self, timeout: float = 5.0) -> bool:
        """True if the box answers."""
        try:
            return bool(self._call("ping", timeout, timeout=timeout))
        except SandboxInfraError:
            return False

    def put_file(self, path: str, data: bytes) -> None:
        """Write a file under the box's work dir."""
        self._call("put_file", path, data)

    def get_file(self, path: str, limit: int = 16 * 1024 * 1024) -> bytes:
        """Read a file from the box's work dir."""
        return self._call("get_file", path, limit)

    def kill_worker(self) -> None:
        """Kill the box's worker process (tests of crash handling)."""
        self._call("kill_worker")

    def stop(self) -> None:
        """Give the box back to its pool."""
        if not self._released:
            self.pool.release(self)

    def __repr__(self) -> str:
        return f"<RemoteSandbox box={self.box} actor={self.slot} {'dead' if self._dead else 'live'}>"


class RemoteSession:
    """One REPL session of a :class:`RemoteSandbox` (on the same actor and box)."""

    def __init__(self, sandbox: RemoteSandbox, sid: int) -> None:
        self.sandbox, self.sid = sandbox, sid
        self.closed = False

    def run(self, code: str, timeout: float | None = None) -> ExecResult:
        """Run ``code`` in this session."""
        sb = self.sandbox
        if sb._dead:
            return ExecResult.infra(sb._dead)
        try:
            return sb._get(sb.actor.run.remote(sb.epoch, sb.box, self.sid, code, timeout), timeout)
        except SandboxInfraError as exc:
            return ExecResult.infra(str(exc))

    def fork(self) -> RemoteSession:
        """A new session whose globals are a copy of this one's."""
        sb = self.sandbox
        if sb._dead:
            raise SandboxInfraError(sb._dead)
        return RemoteSession(sb, sb._get(sb.actor.session.remote(sb.epoch, sb.box, self.sid), None))

    def close(self) -> None:
        """Close the session; never raises."""
        if not self.closed and self.sid != 0:
            self.closed = True
            try:
                self.sandbox.actor.close_session.remote(self.sandbox.epoch, self.sandbox.box, self.sid)
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
