"""Sliding-window rate limits and the connection-slot pool."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class SlidingWindowLimiter:
    """At most `limit` events per `window_s` seconds, over a sliding window. 0 for either disables it."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._events: deque[float] = deque()

    @property
    def enabled(self) -> bool:
        return self.limit > 0 and self.window_s > 0

    def acquire(self) -> float | None:
        """Record an event; return None when allowed, else the seconds until one would be."""
        if not self.enabled:
            return None
        now = self._clock()
        while self._events and now - self._events[0] >= self.window_s:
            self._events.popleft()
        if len(self._events) >= self.limit:
            return max(self._events[0] + self.window_s - now, 0.001)
        self._events.append(now)
        return None


class ConnectionSlots:
    """A bounded pool of connection slots; `acquire` waits at most `timeout_s`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._semaphore = asyncio.Semaphore(capacity)
        self.active = 0

    async def acquire(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._semaphore.acquire(), timeout=timeout_s)
        except TimeoutError:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1
        self._semaphore.release()
