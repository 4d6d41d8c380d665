"""Sliding-window rate limits, the connection-slot pool and the live connections it admitted."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol


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


class Drainable(Protocol):
    """A live connection, as the drain sees it (`connection.Connection`)."""

    async def shut_down(self) -> None: ...


class LiveConnections:
    """The connections an app serves right now, so a shutdown can end them politely.

    uvicorn closes every socket at once when it stops (the app only sees the disconnect afterwards),
    so the server that runs the app drains it first (`serving.DrainingServer`)."""

    def __init__(self) -> None:
        self._connections: set[Drainable] = set()

    def __len__(self) -> int:
        return len(self._connections)

    def add(self, connection: Drainable) -> None:
        self._connections.add(connection)

    def discard(self, connection: Drainable) -> None:
        self._connections.discard(connection)

    async def drain(self) -> None:
        """Shut every live connection down (each one's failure stays its own)."""
        await asyncio.gather(*(c.shut_down() for c in list(self._connections)), return_exceptions=True)
