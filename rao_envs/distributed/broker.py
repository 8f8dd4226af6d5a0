"""The one concurrency cap of a distributed rollout: slots leased to workers by a broker.

A cap of 64 means 64 requests in flight in the whole cluster. Asking a central actor for
every request would put a round trip on every call, so slots are **leased**: the
:class:`SlotBroker` (one Ray actor, on the head node) owns the ``capacity`` slots and lends
them to workers in bursts; each worker's :class:`RemoteCap` hands its leased slots to its
requests with a local :class:`~rao_envs.limiter.FairLimiter` (round-robin across that worker's
trees) and gives idle slots back after ``idle_s``. A worker asks only when all its slots are
busy and a request waits; while no slot is free anywhere, hungry workers queue at the broker
and returned slots are shared among them one at a time, round-robin. So the cap is global and
never exceeded (leased ≤ capacity), no tree starves (round-robin within a worker, workers
balanced by the driver's tree dispatch), and a request costs no round trip while its worker
holds a slot.

When a worker dies, :meth:`SlotBroker.forget` takes back every slot it held: a dead worker
never shrinks the cap.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from typing import Any

from rao_envs.limiter import FairLimiter


class SlotBroker:
    """Owns the cluster-wide request slots and leases them to workers (module docstring)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.free = capacity
        self.leased: Counter[int] = Counter()
        self.dead: set[int] = set()
        self._hungry: OrderedDict[int, list] = OrderedDict()  # worker -> [want, future, granted]
        self.peak = 0
        self.leases = 0

    async def lease(self, worker: int, want: int) -> int:
        """Lease up to ``want`` slots to ``worker``; waits while none is free. Returns how many (0 if forgotten)."""
        if worker in self.dead or want < 1:
            return 0
        if self.free > 0 and not self._hungry:
            return self._grant(worker, min(want, self.free))
        entry = self._hungry.get(worker)
        if entry is None:
            entry = self._hungry[worker] = [want, asyncio.get_running_loop().create_future(), 0]
        else:
            entry[0] = max(entry[0], want)
        self._share()
        return await asyncio.shield(entry[1])

    def _grant(self, worker: int, n: int) -> int:
        self.free -= n
        self.leased[worker] += n
        self.leases += 1
        self.peak = max(self.peak, self.capacity - self.free)
        return n

    def _share(self) -> None:
        """Hand free slots to hungry workers one at a time, round-robin; every worker served gets its slots now."""
        while self.free > 0 and self._hungry:
            progress = False
            for worker, entry in self._hungry.items():
                if self.free == 0:
                    break
                if entry[2] < entry[0]:
                    self._grant(worker, 1)
                    entry[2] += 1
                    progress = True
            if not progress:
                break
        for worker in [w for w, e in self._hungry.items() if e[2] > 0]:
            entry = self._hungry.pop(worker)
            entry[1].set_result(entry[2])

    def give_back(self, worker: int, n: int) -> None:
        """``worker`` returns ``n`` idle slots."""
        n = min(n, self.leased[worker])
        if n > 0:
            self.leased[worker] -= n
            self.free += n
            self._share()

    def forget(self, worker: int) -> int:
        """``worker`` died: take back every slot it held. Returns how many."""
        self.dead.add(worker)
        n = self.leased.pop(worker, 0)
        entry = self._hungry.pop(worker, None)
        if entry is not None:
            entry[1].set_result(0)
        self.free += n
        self._share()
        return n

    def stats(self) -> dict[str, int]:
        """Capacity, slots leased now, peak leased (an upper bound of requests in flight) and leases granted."""
        return {"capacity": self.capacity, "leased": self.capacity - self.free, "peak": self.peak, "leases": self.leases}


class RemoteCap:
    """A worker's share of the cap, shaped like :class:`FairLimiter` for the rollout driver.

    ``broker`` is a :class:`SlotBroker` Ray actor handle (anything whose ``lease.remote(...)``
    is awaitable and ``give_back.remote(...)`` fire-and-forget). Slots idle for ``idle_s``
    seconds go back to the broker.
    """

    def __init__(self, broker: Any, worker: int, idle_s: float = 0.1) -> None:
        self.broker, self.worker, self.idle_s = broker, worker, idle_s
        self.local = FairLimiter(1)
        self.local.free = 0  # every slot starts at the broker
        self.held = 0
        self.in_use_peak = 0
        self._leasing: asyncio.Task | None = None
        self._returning: asyncio.Task | None = None

    @property
    def in_use(self) -> int:
        """Requests of this worker in flight."""
        return self.held - self.local.free

    async def acquire(self, key: Any) -> None:
        """Wait for a slot for tree ``key`` (round-robin across this worker's trees)."""
        if self.local.free == 0 or self.local._order:
            self._want()  # runs once this request is queued below
        try:
            await self.local.acquire(key)
        except asyncio.CancelledError:
            self._idle_later()  # a slot granted to a cancelled request must not sit here unused
            raise
        self.in_use_peak = max(self.in_use_peak, self.in_use)

    def _want(self) -> None:
        if self._leasing is None or self._leasing.done():
            self._leasing = asyncio.get_running_loop().create_task(self._lease())

    def _pending(self) -> int:
        """Requests of this worker waiting for a slot (not yet granted)."""
        return sum(1 for q in self.local._waiters.values() for f in q if not f.done())

    async def _lease(self) -> None:
        try:
            await self._lease_loop()
        except Exception as exc:  # noqa: BLE001 - the broker is gone: fail the waiting requests, never hang them
            from rao_envs.policies.base import PolicyError

            for q in self.local._waiters.values():
                for f in q:
                    if not f.done():
                        f.set_exception(PolicyError(f"the cluster's slot broker is unreachable: {type(exc).__name__}"))

    async def _lease_loop(self) -> None:
        while (want := self._pending()) > 0:
            granted = await self.broker.lease.remote(self.worker, want)
            if not granted:  # this worker was declared dead: the driver is stopping it
                await asyncio.sleep(0.05)
                continue
            self.held += granted
            for _ in range(granted):
                self.local.release()  # wakes a waiter (round-robin) or keeps the slot free here
            self._idle_later()

    def release(self) -> None:
        """A request ended: its slot goes to this worker's next waiting request, or back to the broker when idle."""
        self.local.release()
        self._idle_later()

    def _idle_later(self) -> None:
        if self.local.free > 0 and (self._returning is None or self._returning.done()):
            self._returning = asyncio.get_running_loop().create_task(self._give_back())

    async def _give_back(self) -> None:
        await asyncio.sleep(self.idle_s)
        n = self.local.free if not self.local._order else 0
        if n > 0:
            self.local.free -= n
            self.held -= n
            self.broker.give_back.remote(self.worker, n)
