"""The one percentile helper every report uses (dashboard, benches, soak, test clients)."""

from __future__ import annotations

import pytest

from yap_server.stats import percentiles
from yap_server.telemetry.recent import RecentValues


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    cuts = percentiles(values, (50, 90, 99))
    assert cuts["p50"] == pytest.approx(50.5)
    assert cuts["p90"] == pytest.approx(90.1)
    assert cuts["p99"] == pytest.approx(99.01)
    assert list(percentiles([3.0, 1.0, 2.0])) == ["p50", "p95", "p99"]  # the default points, unsorted input
    assert percentiles([3.0, 1.0, 2.0])["p50"] == 2.0


def test_percentiles_of_one_value_and_of_none() -> None:
    assert percentiles([7.25], (50, 99)) == {"p50": 7.25, "p99": 7.25}
    assert percentiles([], (50, 95)) == {"p50": None, "p95": None}
    assert percentiles([1.0, 2.0], (50,), digits=0) == {"p50": 2.0}  # 1.5 rounds half to even


def test_recent_values_keep_the_window_and_the_newest() -> None:
    now = [0.0]
    recent = RecentValues(window_s=10.0, capacity=4, clock=lambda: now[0])
    for value in (1.0, 2.0, 3.0):
        recent.add(value)
        now[0] += 2.0  # added at 0, 2 and 4 s
    assert recent.values() == [1.0, 2.0, 3.0] and recent.values(3.0) == [3.0] and recent.values(4.0) == [2.0, 3.0]
    now[0] = 11.0  # the value added at 0 s left the window
    assert recent.values() == [2.0, 3.0] and recent.values(100.0) == [2.0, 3.0]
    for value in (4.0, 5.0, 6.0):
        recent.add(value)  # at 11 s: over capacity, the oldest goes
    assert recent.values() == [3.0, 4.0, 5.0, 6.0] and recent.values(0.0) == [4.0, 5.0, 6.0]
