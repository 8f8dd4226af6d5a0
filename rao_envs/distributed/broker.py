"""The one concurrency cap of a distributed rollout: a slot broker every worker asks.

:class:`SlotBroker` (a Ray actor in the cluster, a plain object in tests) grants request
slots round-robin across *trees* with :class:`~rao_envs.limiter.FairLimiter`, whichever worker
runs them, so a cap of 64 means 64 requests in flight in the whole cluster and a huge tree on
one worker cannot starve the trees on another. It counts the slots each worker holds: when a
worker dies, :meth:`SlotBroker.forget` gives its slots back (a dead worker never shrinks the
cap). :class:`RemoteCap` is the worker-side client with the limiter interface the rollout
driver uses (``await acquire(key)`` / ``release()``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from rao_envs.limiter import FairLimiter


class SlotBroker:
    """A :class:`FairLimiter` shared by many workers, with per-worker accounting."""

    def __init__(self, capacity: int) -> None:
        self.limiter = FairLimiter(capacity)
        self.held: Counter[int] = Counter()
        self.dead: set[int] = set()
        self.grants = 0

    async def acquire(self, worker: int, key: Any) -> bool:
        """Wait for a slot for tree ``key`` of ``worker``; False if the worker was forgotten meanwhile."""
        await self.limiter.acquire(key)
        if worker in self.dead:
            self.limiter.release()
            return False
        self.held[worker] += 1
        self.grants += 1
        return True

    def release(self, worker: int) -> None:
        """Give back one slot of ``worker``."""
        if self.held[worker] > 0:
            self.held[worker] -= 1
            self.limiter.release()

    def forget(self, worker: int) -> int:
        """``worker`` died: free every slot it held (and any granted later). Returns how many."""
        self.dead.add(worker)
        n = self.held.pop(worker, 0)
        for _ in range(n):
            self.limiter.release()
        return n

    def stats(self) -> dict[str, int]:
        """Capacity, slots in use, peak in use and grants so far."""
        lim = self.limiter
        return {"capacity": lim.capacity, "in_use": lim.in_use, "peak": lim.in_use_peak, "grants": self.grants}


class RemoteCap:
    """The worker side of a :class:`SlotBroker` actor, shaped like :class:`FairLimiter` for the driver.

    A request cancelled while it waits (its node ended) cancels its grant at the broker; a grant
    that raced the cancellation is handed straight back, so no slot leaks.
    """

    def __init__(self, broker: Any, worker: int) -> None:
        self.broker, self.worker = broker, worker
        self.in_use_peak = 0
        self._in_use = 0

    async def acquire(self, key: Any) -> None:
        """Wait for a cluster-wide slot for tree ``key``."""
        import ray

        ref = self.broker.acquire.remote(self.worker, key)
        fut = asyncio.wrap_future(ref.future())
        try:
            ok = await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(self._settle)
            ray.cancel(ref)
            raise
        if not ok:
            raise RuntimeError("this rollout worker was declared dead by the driver")
        self._in_use += 1
        self.in_use_peak = max(self.in_use_peak, self._in_use)

    def _settle(self, fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is None and fut.result():
            self.broker.release.remote(self.worker)

    def release(self) -> None:
        """Give the slot back (fire and forget)."""
        self._in_use -= 1
        self.broker.release.remote(self.worker)
