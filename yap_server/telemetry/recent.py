"""Recent raw observations, for percentiles over a time window (`stats.percentiles`): the dashboard's
first-token, inter-token, classifier and cancel latencies. Prometheus keeps the histograms; this keeps
the last values themselves, bounded in count and age."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RecentValues:
    """The values observed in the last `window_s` seconds (at most `capacity` of them: the newest)."""

    def __init__(self, window_s: float = 600.0, capacity: int = 8192, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._items: deque[tuple[float, float]] = deque(maxlen=capacity)

    def add(self, value: float) -> None:
        self._items.append((self._clock(), value))

    def values(self, within_s: float | None = None) -> list[float]:
        """The values of the last `within_s` seconds (default: the whole window), oldest first."""
        cutoff = self._clock() - (self.window_s if within_s is None else within_s)
        items = self._items
        while items and items[0][0] < self._clock() - self.window_s:
            items.popleft()
        return [value for at, value in items if at >= cutoff]
