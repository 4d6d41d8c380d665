"""Latency percentiles, computed one way everywhere: the dashboard, the benches, the soak and the test clients."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence


def percentiles(
    values: Sequence[float], points: Iterable[int] = (50, 95, 99), *, digits: int | None = None
) -> dict[str, float | None]:
    """`{"p50": …, "p95": …}` for the given points: linear interpolation between the closest ranks
    (`statistics.quantiles`, inclusive method), rounded to `digits` when given; None each when `values` is empty."""
    wanted = list(points)
    if not values:
        return {f"p{p}": None for p in wanted}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [float(values[0])] * 99
    return {f"p{p}": cuts[p - 1] if digits is None else round(cuts[p - 1], digits) for p in wanted}
