"""Recent raw observations, for percentiles over a time window (`stats.percentiles`): the dashboard's
first-token, inter-token, classifier and cancel latencies. Prometheus keeps the histograms; this keeps
the last values themselves, bounded in count and age."""

from __future__ import annotations

import bisect
import itertools
import time
from collections import deque
from collections.abc import Callable


class RecentValues:
    """The values observed in the last `window_s` seconds (at most `capacity` of them: the newest).

    `add` is on the per-token path, so it only appends; the times and the values are kept in two
    parallel deques, so that reading copies them at C speed instead of unpacking a tuple per value."""

    def __init__(self, window_s: float = 600.0, capacity: int = 8192, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._at: deque[float] = deque(maxlen=capacity)
        self._values: deque[float] = deque(maxlen=capacity)

    def add(self, value: float) -> None:
        self._at.append(self._clock())
        self._values.append(value)

    def values(self, within_s: float | None = None) -> list[float]:
        """The values of the last `within_s` seconds (default: the whole window), oldest first."""
        now, at, values = self._clock(), self._at, self._values
        while at and at[0] < now - self.window_s:
            at.popleft()
            values.popleft()
        if within_s is None or within_s >= self.window_s:
            return list(values)
        first = bisect.bisect_left(at, now - within_s)  # the clock only moves forward: `at` is sorted
        return list(itertools.islice(values, first, None))
