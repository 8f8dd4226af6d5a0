"""A rollout worker: runs whole trees with the local async driver, under a shared cap.

:class:`TreeWorker` is what each Ray actor holds (``ray.remote(TreeWorker)``); it is a plain
class, so the same code runs in process in tests. Each tree runs exactly as in
:class:`~rao_envs.rollout.RolloutDriver` (rounds, slot order, cancellation, failure masking),
with the driver's limiter swapped for the cluster-wide one (:class:`~rao_envs.distributed.broker.RemoteCap`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from rao_envs.rollout import RolloutDriver


class TreeWorker:
    """Runs trees against ``policy`` for a distributed driver (one per Ray actor).

    ``limiter`` is the cap (a :class:`~rao_envs.distributed.broker.RemoteCap`, or a
    :class:`~rao_envs.limiter.FairLimiter` in process); ``setup`` runs once when the worker
    starts (import task plugins, point a task at a sandbox pool).
    """

    def __init__(self, policy: Any, worker_id: int, limiter: Any = None, *, concurrency: int = 8, strict: bool = False,
                 setup: Callable[[], Any] | None = None) -> None:
        if setup is not None:
            setup()
        self.policy, self.worker_id, self.strict = policy, worker_id, strict
        if _is_actor(limiter):  # a SlotBroker actor handle
            from rao_envs.distributed.broker import RemoteCap

            limiter = RemoteCap(limiter, worker_id)
        self.limiter = limiter
        self.concurrency = concurrency
        self.trees = 0

    async def run_tree(self, factory: Callable[[], Any], env_id: str, seed: int, group: int, key: Any,
                       policy_version: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Run one tree (``tree_id`` ``f"{env_id}:{seed}#g{group}"``); returns it and its counters."""
        driver = RolloutDriver(self.policy, concurrency=self.concurrency, policy_version=policy_version, strict=self.strict)
        if self.limiter is not None:
            driver._limiter = self.limiter  # the cluster-wide cap replaces the driver's own
        t0 = time.perf_counter()
        tree = await driver._run_tree(key, factory, env_id, seed, group)
        self.trees += 1
        st = driver.stats
        return tree, {"calls": st.calls, "nodes": st.nodes, "infra_errors": st.infra_errors,
                      "cancelled_requests": st.cancelled_requests, "errors": st.errors, "wall_s": time.perf_counter() - t0,
                      "worker": self.worker_id, "pid": os.getpid()}

    def ready(self) -> dict[str, Any]:
        """Identity of the worker process: worker id, pid and (on Ray) node id."""
        node = None
        try:
            import ray

            if ray.is_initialized():
                node = ray.get_runtime_context().get_node_id()
        except ImportError:  # pragma: no cover - in-process use without Ray
            pass
        return {"worker": self.worker_id, "pid": os.getpid(), "node": node}


def _is_actor(obj: Any) -> bool:
    """True for a Ray actor handle (without importing Ray when it is not loaded)."""
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and isinstance(obj, ray.actor.ActorHandle)
