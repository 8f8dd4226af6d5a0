"""Distributed tree rollouts on a Ray cluster, with nothing lost when a worker or node dies.

    driver = RayRolloutDriver(policy, address="auto", concurrency=256)
    async for r in driver.stream("Name-v0", range(16), group_size=8):   # as trees finish
        print(r.index, r.status, r.tree.root.score)
    trees = await driver.run("Name-v0", range(16), group_size=8)        # seed-major, like the local driver

**Workers.** ``workers`` Ray actors (default: one per alive node, spread), each a
:class:`~rao_envs.distributed.worker.TreeWorker` running the local async driver on whole trees.
Trees are handed out from one queue to the least-loaded live worker, at most
``trees_per_worker`` at a time, so a slow worker gets fewer. **One cap.** Every request of
every worker takes a slot from one :class:`~rao_envs.distributed.broker.SlotBroker` actor
(``concurrency`` slots, round-robin across trees). **Same trees.** A tree runs exactly as in
the local driver, so the same seeds and answers give the same trees.

**Failures.** A worker actor that dies (its process or its node) loses the trees it was
running: each is re-run on another worker, up to ``max_retries`` more times, then returned
with its root ``infra_error``. A dead worker is replaced (up to ``max_worker_restarts``
times) and its cap slots are freed. Every requested (seed, group) comes back exactly once,
as a :class:`TreeResult` with a status: ``ok``, ``retried`` (finished after a worker loss) or
``failed`` (retries used up). Errors that are the user's (a bad task argument, a policy
returning a non-string) are raised, as in the local driver, never retried.

**Policy version.** An int, or a callable read when each tree is *dispatched* (workers run
in other processes).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rao_envs.errors import ConfigError, RaoEnvsError
from rao_envs.registration import engine_factory
from rao_envs.rollout import RolloutStats
from rao_envs.seeding import check_seed
from rao_envs.types import EpisodeTree

STATUSES = ("ok", "retried", "failed")
_TAKEN = ("address", "concurrency", "policy_version", "progress", "strict")  # rollout()'s own arguments


def require_ray():
    """Import Ray, or raise :class:`~rao_envs.errors.ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError('backend="ray" needs Ray: pip install "rao_envs[ray]" (or pip install ray)') from None
    return ray


def connect(address: str | None = None, **init_kwargs: Any):
    """Connect to the Ray cluster at ``address`` (``"auto"``, ``"HOST:PORT"``), or start a local one; returns ``ray``.

    Reuses an existing connection (``ray.is_initialized()``).
    """
    ray = require_ray()
    if not ray.is_initialized():
        kw = {"logging_level": "ERROR", **init_kwargs}
        if address is None:
            kw.setdefault("include_dashboard", False)
        ray.init(address=address, **kw)
    return ray


@dataclass
class TreeResult:
    """One requested tree of a distributed rollout: which job it is, the tree, and how it went."""

    index: int
    """Position in the request (seed-major: ``seed_position * group_size + group``)."""
    env_id: str
    seed: int
    group: int
    tree: EpisodeTree
    status: str
    """``ok``, ``retried`` (finished after a worker loss) or ``failed`` (root ``infra_error``)."""
    attempts: int
    worker: int | None = None
    error: str | None = None


@dataclass
class RayRolloutStats(RolloutStats):
    """:class:`~rao_envs.rollout.RolloutStats` plus what the cluster did."""

    retried: int = 0
    failed: int = 0
    workers_lost: int = 0
    workers_started: int = 0
    duplicates_dropped: int = 0
    overhead_s: float = 0.0
    """Summed over finished trees: dispatch to result minus the run time in the worker (includes queueing there)."""


@dataclass
class _Worker:
    wid: int
    handle: Any
    state: str = "starting"  # starting → live → dead
    load: int = 0
    ready: Any = None
    started: float = field(default_factory=time.monotonic)
    info: dict[str, Any] = field(default_factory=dict)


def _lost_worker_errors(ray) -> tuple[type[BaseException], ...]:
    ex = ray.exceptions
    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
             "RaySystemError", "LocalRayletDiedError", "ActorUnschedulableError", "OutOfMemoryError")
    return tuple(getattr(ex, n) for n in names if isinstance(getattr(ex, n, None), type))


class RayRolloutDriver:
    """Runs trees on Ray rollout workers under one fair cap (module docstring).

    ``address`` as for :func:`connect`; ``workers`` actors (default one per alive node) with
    ``worker_options`` (Ray actor options: ``num_cpus`` (default 1), ``resources``,
    ``scheduling_strategy`` (default ``"SPREAD"``)); ``worker_setup`` runs once in each worker.
    Reuse one driver for many batches (workers stay up); :meth:`close` stops them.
    """

    def __init__(
        self,
        policy: Any,
        *,
        address: str | None = None,
        workers: int | None = None,
        concurrency: int = 8,
        policy_version: int | Callable[[], int] | None = None,
        progress: bool = False,
        strict: bool = False,
        max_retries: int = 2,
        trees_per_worker: int | None = None,
        worker_options: dict[str, Any] | None = None,
        worker_setup: Callable[[], Any] | None = None,
        max_worker_restarts: int | None = None,
        worker_start_timeout: float = 120.0,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if not callable(policy):
            raise ConfigError(f"policy must be callable (messages[, info]) -> text, or an OpenAIPolicy; got {type(policy).__name__}")
        self.policy = _shippable(policy)
        self.address, self.n_workers, self.concurrency = address, workers, concurrency
        self.policy_version, self.progress, self.strict = policy_version, progress, strict
        self.max_retries, self.trees_per_worker = max_retries, trees_per_worker
        self.worker_options = dict(worker_options or {})
        self.worker_setup = worker_setup
        self.max_worker_restarts = max_worker_restarts
        self.worker_start_timeout = worker_start_timeout
        self.init_kwargs = dict(init_kwargs or {})
        self.stats = RayRolloutStats()
        self.results: list[TreeResult] = []
        self._ray = None
        self._broker = None
        self._workers: dict[int, _Worker] = {}
        self._next_wid = 0
        self._restarts = 0
        self._runs = 0

    # ----- cluster resources
    def _connect(self):
        if self._ray is None:
            self._ray = connect(self.address, **self.init_kwargs)
        return self._ray

    def _start_worker(self) -> _Worker:
        ray = self._ray
        from rao_envs.distributed.worker import TreeWorker

        opts = {"num_cpus": 1, "scheduling_strategy": "SPREAD", **self.worker_options,
                "max_restarts": 0, "max_task_retries": 0, "max_concurrency": 100_000}
        wid = self._next_wid
        self._next_wid += 1
        cls = ray.remote(TreeWorker)
        handle = cls.options(**opts).remote(self.policy, wid, self._broker, concurrency=self.concurrency,
                                            strict=self.strict, setup=self.worker_setup)
        w = _Worker(wid, handle)
        w.ready = asyncio.ensure_future(self._await_ready(w))
        self._workers[wid] = w
        self.stats.workers_started += 1
        return w

    async def _await_ready(self, w: _Worker) -> _Worker:
        try:
            async with asyncio.timeout(self.worker_start_timeout):
                w.info = await w.handle.ready.remote()
            w.state = "live"
        except BaseException as exc:  # noqa: BLE001 - could not start (no resources, died at start)
            w.state = "dead"
            w.info = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            self._kill(w)
            if isinstance(exc, asyncio.CancelledError):
                raise
        return w

    def _kill(self, w: _Worker) -> None:
        try:
            self._ray.kill(w.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        if self._broker is not None:
            self._broker.forget.remote(w.wid)

    async def _ensure_workers(self) -> None:
        ray = self._connect()
        if self._broker is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            from rao_envs.distributed.broker import SlotBroker

            # on the head node (it lives as long as the cluster), else next to this driver
            here = next((n["NodeID"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n["Resources"]),
                        ray.get_runtime_context().get_node_id())
            self._broker = ray.remote(SlotBroker).options(
                num_cpus=0, max_concurrency=100_000, max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            ).remote(self.concurrency)
        want = self.n_workers or max(1, sum(1 for n in ray.nodes() if n.get("Alive")))
        if self.max_worker_restarts is None:
            self.max_worker_restarts = 4 * want
        self.n_workers = want
        live = [w for w in self._workers.values() if w.state != "dead"]
        for _ in range(want - len(live)):
            self._start_worker()
        pending = [w.ready for w in self._workers.values() if w.state == "starting"]
        if pending:
            await asyncio.wait(pending)
        if not any(w.state == "live" for w in self._workers.values()):
            errors = "; ".join(w.info.get("error", "?") for w in self._workers.values())
            raise ConfigError(f"no Ray rollout worker could start ({errors}); check worker_options against the "
                              f"cluster's resources (ray.cluster_resources())")

    def close(self) -> None:
        """Stop the workers and the slot broker (the driver can start new ones on the next run)."""
        if self._ray is None:
            return
        for w in self._workers.values():
            if w.state != "dead":
                try:
                    self._ray.kill(w.handle, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass
        if self._broker is not None:
            try:
                self._ray.kill(self._broker, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self._workers.clear()
        self._broker = None

    def worker_info(self) -> list[dict[str, Any]]:
        """Live workers: worker id, pid and node id (for logs and fault tests)."""
        return [dict(w.info) for w in self._workers.values() if w.state == "live"]

    # ----- running trees
    async def run(self, env_id: str, seeds: Iterable[int], *, group_size: int = 1,
                  env_kwargs: dict[str, Any] | None = None) -> list[EpisodeTree]:
        """Run ``group_size`` trees per seed; returns them seed-major (as :class:`~rao_envs.rollout.RolloutDriver`)."""
        results = [r async for r in self.stream(env_id, seeds, group_size=group_size, env_kwargs=env_kwargs, ordered=True)]
        self.results = results
        return [r.tree for r in results]

    async def stream(self, env_id: str, seeds: Iterable[int], *, group_size: int = 1,
                     env_kwargs: dict[str, Any] | None = None, ordered: bool = False) -> AsyncIterator[TreeResult]:
        """Yield a :class:`TreeResult` per requested tree as it finishes (``ordered=True``: in request order)."""
        if group_size < 1:
            raise ConfigError(f"group_size must be at least 1, got {group_size}")
        seeds = [check_seed(s) for s in seeds]
        factory = engine_factory(env_id, **dict(env_kwargs or {}))  # fails fast here on a bad id or kwargs
        jobs = [(s, g) for s in seeds for g in range(group_size)]
        t0 = time.perf_counter()
        await self._ensure_workers()
        ray = self._ray
        lost_errors = _lost_worker_errors(ray)
        factory_ref = factory  # small: sent inline with each tree (faster than a round trip to the object store)
        run_id = self._runs
        self._runs += 1
        queue: deque[int] = deque(range(len(jobs)))
        attempts = [0] * len(jobs)
        last_worker: dict[int, int] = {}
        last_error: dict[int, str] = {}
        finished: set[int] = set()
        buffered: dict[int, TreeResult] = {}
        next_out = 0
        inflight: dict[asyncio.Future, tuple[int, _Worker, Any]] = {}
        sent: dict[int, float] = {}
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(jobs), unit="tree", desc=f"rollout {env_id} (ray)", dynamic_ncols=True)

        def window() -> int:
            if self.trees_per_worker:
                return self.trees_per_worker
            live = max(1, sum(1 for w in self._workers.values() if w.state == "live"))
            return max(2, math.ceil(2 * self.concurrency / live))

        def dispatch() -> None:
            cap = window()
            while queue:
                live = [w for w in self._workers.values() if w.state == "live" and w.load < cap]
                if not live:
                    return
                i = queue.popleft()
                avoid = last_worker.get(i)
                w = min(live, key=lambda w: (w.wid == avoid and len(live) > 1, w.load, w.wid))
                pv = self.policy_version() if callable(self.policy_version) else self.policy_version
                seed, group = jobs[i]
                ref = w.handle.run_tree.remote(factory_ref, env_id, seed, group, (run_id, i), pv)
                attempts[i] += 1
                last_worker[i] = w.wid
                w.load += 1
                inflight[asyncio.wrap_future(ref.future())] = (i, w, ref)
                sent[i] = time.perf_counter()

        def lose(w: _Worker, why: str) -> None:
            if w.state == "dead":
                return
            w.state = "dead"
            self.stats.workers_lost += 1
            self._kill(w)
            if self._restarts < self.max_worker_restarts:
                self._restarts += 1
                self._start_worker()

        def failed_tree(i: int) -> TreeResult:
            seed, group = jobs[i]
            engine = factory()
            tree = engine.reset(seed)
            tree.tree_id = f"{env_id}:{seed}#g{group}"
            msg = f"rollout worker lost {attempts[i]} time(s), retries used up: {last_error.get(i, 'no worker left')}"
            engine.fail("0", msg)
            self.stats.failed += 1
            return TreeResult(i, env_id, seed, group, tree, "failed", attempts[i], last_worker.get(i), msg)

        def finish(res: TreeResult) -> None:
            finished.add(res.index)
            self.stats.trees += 1
            self.stats.nodes += len(res.tree.nodes)
            if bar is not None:
                bar.update(1)

        def emit() -> list[TreeResult]:
            nonlocal next_out
            out = []
            if ordered:
                while next_out in buffered:
                    out.append(buffered.pop(next_out))
                    next_out += 1
            else:
                out = list(buffered.values())
                buffered.clear()
            return out

        try:
            while len(finished) < len(jobs):
                dispatch()
                starting = [w.ready for w in self._workers.values() if w.state == "starting"]
                if not inflight and not starting:
                    while queue:  # no worker left to run them: every remaining tree fails, none is dropped
                        i = queue.popleft()
                        last_error.setdefault(i, "no rollout worker left (restarts used up or none could start)")
                        res = failed_tree(i)
                        finish(res)
                        buffered[i] = res
                    for r in emit():
                        yield r
                    break
                done, _ = await asyncio.wait([*inflight, *starting], return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    if fut not in inflight:
                        continue  # a worker finished starting: dispatch() uses it next
                    i, w, _ref = inflight.pop(fut)
                    w.load -= 1
                    seed, group = jobs[i]
                    exc = fut.exception()
                    if exc is None:
                        tree, info = fut.result()
                        if i in finished:
                            self.stats.duplicates_dropped += 1
                            continue
                        st = self.stats
                        st.calls += info["calls"]
                        st.infra_errors += info["infra_errors"]
                        st.cancelled_requests += info["cancelled_requests"]
                        st.errors += info["errors"]
                        st.overhead_s += max(0.0, time.perf_counter() - sent[i] - info["wall_s"])
                        status = "ok" if attempts[i] == 1 else "retried"
                        if status == "retried":
                            st.retried += 1
                        res = TreeResult(i, env_id, seed, group, tree, status, attempts[i], info["worker"],
                                         last_error.get(i))
                        finish(res)
                        buffered[i] = res
                        continue
                    if isinstance(exc, ray.exceptions.RayTaskError) and not isinstance(exc, lost_errors):
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, RaoEnvsError) or (self.strict and isinstance(cause, Exception)):
                            raise cause  # the user's mistake: say so, as the local driver does
                    if not isinstance(exc, lost_errors) and not isinstance(exc, ray.exceptions.RayTaskError):
                        raise exc
                    last_error[i] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                    if isinstance(exc, lost_errors):
                        lose(w, last_error[i])
                    if i in finished:
                        continue
                    if attempts[i] > self.max_retries:
                        res = failed_tree(i)
                        finish(res)
                        buffered[i] = res
                    else:
                        queue.appendleft(i)  # re-run first, on another worker
                if bar is not None:
                    running = sum(w.load for w in self._workers.values())
                    bar.set_postfix(running=running, failed=self.stats.failed, retried=self.stats.retried, refresh=False)
                for r in emit():
                    yield r
        finally:
            for fut, (_i, _w, ref) in inflight.items():
                fut.cancel()
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001
                    pass
            if bar is not None:
                bar.close()
            self.stats.wall_s += time.perf_counter() - t0
            try:
                peak = (await self._broker.stats.remote())["peak"] if self._broker is not None else 0
                self.stats.peak_in_flight = max(self.stats.peak_in_flight, peak)
            except Exception:  # noqa: BLE001 - stats only
                pass

    async def __aenter__(self) -> RayRolloutDriver:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


def _shippable(policy: Any) -> Any:
    """A copy of an OpenAIPolicy without its live HTTP client (clients do not pickle); others as they are."""
    from rao_envs.policies.openai import OpenAIPolicy

    if isinstance(policy, OpenAIPolicy) and policy._client is not None:
        import copy

        policy = copy.copy(policy)
        policy._client = policy._loop = None
    return policy


async def ray_rollout(
    env_id: str,
    policy: Any,
    seeds: int | Iterable[int],
    *,
    group_size: int = 1,
    concurrency: int = 8,
    env_kwargs: dict[str, Any] | None = None,
    policy_version: int | Callable[[], int] | None = None,
    progress: bool = False,
    strict: bool = False,
    address: str | None = None,
    **options: Any,
) -> list[EpisodeTree] | EpisodeTree:
    """:func:`rao_envs.rollout.rollout` on Ray: same arguments and return shape; ``options`` go to :class:`RayRolloutDriver`."""
    import inspect

    known = set(inspect.signature(RayRolloutDriver.__init__).parameters) - {"self", "policy"}
    bad = sorted(set(options) - known)
    if bad:
        raise ConfigError(f"unknown Ray rollout option(s) {bad}; choose from {sorted(known - set(_TAKEN))}")
    require_ray()
    driver = RayRolloutDriver(policy, address=address, concurrency=concurrency, policy_version=policy_version,
                              progress=progress, strict=strict, **options)
    try:
        if isinstance(seeds, int):
            trees = await driver.run(env_id, [seeds], group_size=group_size, env_kwargs=env_kwargs)
            return trees[0] if group_size == 1 else trees
        return await driver.run(env_id, seeds, group_size=group_size, env_kwargs=env_kwargs)
    finally:
        driver.close()
