"""Latency percentiles, computed one way everywhere: the dashboard, the benches, the soak and the test clients."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def percentiles(
    values: Sequence[float], points: Iterable[int] = (50, 95, 99), *, digits: int | None = None
) -> dict[str, float | None]:
    """`{"p50": …, "p95": …}` for the given points (1 to 99): linear interpolation between the closest ranks
    (`statistics.quantiles(n=100, method="inclusive")`'s cut points, computed only for the points asked),
    rounded to `digits` when given; None each when `values` is empty. Sorted input costs one pass."""
    wanted = list(points)
    if not values:
        return {f"p{p}": None for p in wanted}
    data = sorted(values)
    last = len(data) - 1
    cuts: dict[str, float | None] = {}
    for p in wanted:
        if last == 0:
            cut = float(data[0])
        else:
            j, delta = divmod(p * last, 100)  # statistics.quantiles' exact integer arithmetic
            cut = (data[j] * (100 - delta) + data[j + 1] * delta) / 100
        cuts[f"p{p}"] = cut if digits is None else round(cut, digits)
    return cuts
