"""A concurrency cap shared by many trees, granted round-robin so no tree starves the others."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from rao_envs.errors import ConfigError


class FairLimiter:
    """A concurrency cap shared by many keys (trees), granted round-robin across keys.

    ``await acquire(key)`` waits for a slot; ``release()`` hands the slot to the next key in
    round-robin order that has a waiter, so every tree progresses at the same rate of grants
    however many requests it queues.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigError(f"concurrency must be at least 1, got {capacity}")
        self.capacity = capacity
        self.free = capacity
        self._waiters: dict[Any, deque[asyncio.Future]] = {}
        self._order: deque[Any] = deque()
        self.in_use_peak = 0

    @property
    def in_use(self) -> int:
        """Slots held right now."""
        return self.capacity - self.free

    async def acquire(self, key: Any) -> None:
        """Wait for a slot for ``key``."""
        if self.free > 0 and not self._order:
            self.free -= 1
            self.in_use_peak = max(self.in_use_peak, self.in_use)
            return
        fut = asyncio.get_running_loop().create_future()
        q = self._waiters.get(key)
        if q is None:
            q = self._waiters[key] = deque()
            self._order.append(key)
        q.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, then cancelled: give the slot on
                self.release()
            else:
                self._discard(key, fut)
            raise
        self.in_use_peak = max(self.in_use_peak, self.in_use)

    def release(self) -> None:
        """Return a slot: it goes to the next waiting key (round-robin), else back to the pool."""
        while self._order:
            key = self._order.popleft()
            q = self._waiters[key]
            while q and q[0].done():
                q.popleft()
            if not q:
                del self._waiters[key]
                continue
            fut = q.popleft()
            if q:
                self._order.append(key)
            else:
                del self._waiters[key]
            fut.set_result(None)
            return
        self.free += 1

    def _discard(self, key: Any, fut: asyncio.Future) -> None:
        q = self._waiters.get(key)
        if q is not None and fut in q:
            q.remove(fut)
            if not q:
                del self._waiters[key]
                self._order.remove(key)
