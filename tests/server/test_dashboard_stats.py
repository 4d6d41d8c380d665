"""`/dashboard/stats` is built once per sampler tick while a page reads it, never per request: nothing is
built while nobody reads it, reads between two ticks get the same bytes, the tick keeps a watched body
fresh on its own, and traffic shows up in it a tick later."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.testclient import TestClient

from yap_engines import FakeEngine
from yap_server.app import create_app
from yap_server.dashboard import STATS_EVERY_S, sorted_recent
from yap_server.state import AppState
from yap_server.telemetry import Telemetry, TelemetrySettings

from .conftest import KEY, server_settings

HEADERS = {"X-API-Key": KEY}


def wait_for(condition: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_stats_come_from_the_tick_not_from_each_request() -> None:
    app = create_app(server_settings(), engines={"chat": FakeEngine(seed=1, tokens_per_s=400)})
    with TestClient(app) as client:
        state: AppState = client.app_state["app"]
        time.sleep(2.5 * STATS_EVERY_S)
        assert state.stats_body.body is None  # two ticks and no reader: nothing was built

        started = time.monotonic()
        answers = [client.get("/dashboard/stats", headers=HEADERS) for _ in range(40)]
        elapsed = time.monotonic() - started
        assert all(a.status_code == 200 and a.headers["content-type"] == "application/json" for a in answers)
        assert answers[0].headers["cache-control"] == "no-store"
        builds = {a.json()["server_time"] for a in answers}
        assert len(builds) <= elapsed / STATS_EVERY_S + 2, f"{len(builds)} builds for 40 reads in {elapsed:.2f} s"
        assert len({a.content for a in answers}) == len(builds)  # the same bytes between two builds

        taken = state.stats_body.taken_at  # watched now: the tick rebuilds it without another read
        wait_for(lambda: state.stats_body.taken_at > taken, 30, "the tick did not rebuild a watched body")

        def tokens() -> float:
            return float(client.get("/dashboard/stats", headers=HEADERS).json()["throughput"]["tokens_total"])

        before = tokens()
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
        assert client.post("/v1/chat/completions", json=body, headers=HEADERS).status_code == 200
        wait_for(lambda: tokens() > before, 30, "the completion never reached the stats")
        assert client.get("/dashboard/stats").status_code == 401  # the cached body still needs the key


async def test_a_build_lets_the_event_loop_run_between_two_series_sorts() -> None:
    """Sorting a full latency series takes about a millisecond: streams and requests get a turn of the
    event loop between two series, so they wait behind one sort at most, not the whole build."""
    telemetry = Telemetry.build(TelemetrySettings())
    for series in telemetry.recent.values():
        for value in range(2000, 0, -1):
            series.add(value / 1000)
    turns = 0
    stop = asyncio.Event()

    async def other_work() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    ordered = await sorted_recent(telemetry)
    stop.set()
    await other
    assert set(ordered) == set(telemetry.recent)
    assert all(values == sorted(values) and len(values) == 2000 for values in ordered.values())
    assert turns - before >= len(ordered) - 1  # a turn between each two sorts
