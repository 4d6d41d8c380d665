"""`GET /dashboard`: one page for the whole server; `GET /dashboard/stats`: its JSON; `GET /health` (ready).

The page (`dashboard_page.py`: HTML, script and style served from this package, no external request,
a strict content-security policy) holds no data. It asks for the API key once and keeps it in the tab's
`sessionStorage`, sending it as `X-API-Key` to `/dashboard/stats` every 2 s: the key never goes into a
URL. A link with `?api_key=` still works: the script moves the key into `sessionStorage` and strips it
from the address bar at once.

`/dashboard/stats` reads the same counters `/metrics` exports (the app's Prometheus registry) and the
last 10 minutes of raw latencies (`Telemetry.recent`) through the one percentile helper
(`stats.percentiles`). `History` samples those counters every `SAMPLE_EVERY_S` into the 10-minute series
the charts draw. The answer is not computed per request: while a page reads it, the sampler's tick
(`STATS_EVERY_S`) builds and encodes it once (`StatsBody`), and a request sends those bytes, so the data
is at most one tick old. The build sorts each latency series once, letting the event loop run between
two series, so a stream or a request waits behind one sort (under a millisecond) at most. A read that
finds no body built within two ticks (nobody was watching, so the tick built none) builds one itself;
without readers the server spends nothing on it. `/health` answers 200 only when every engine answers
its health check within `HEALTH_TIMEOUT_S` (ready, not merely up), 503 naming the failing parts otherwise.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from yap_engines import EngineHealth

from .auth import authenticate, unauthorized
from .dashboard_page import PAGE, SCRIPT, STYLE
from .frames import encode_json
from .jobs import JobBoard
from .stats import percentiles
from .telemetry.series import SAMPLE_EVERY_S, counter_values, labelled

if TYPE_CHECKING:
    from .state import AppState
    from .telemetry import Telemetry

log = logging.getLogger("yap.dashboard")

HEALTH_TIMEOUT_S = 5.0
WINDOW_S = 60.0
STATS_EVERY_S = 1.0  # the sampler's tick: how often a watched stats body is rebuilt (its staleness bound)
WATCHED_S = 10.0  # a body read within this long is being watched: the tick keeps rebuilding it
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


async def engine_health(engines: dict[str, Any]) -> dict[str, EngineHealth]:
    """Each engine's health, a timeout or an exception counting as not ready."""

    async def check(engine: Any) -> EngineHealth:
        try:
            return await asyncio.wait_for(engine.health(), HEALTH_TIMEOUT_S)
        except TimeoutError:
            return EngineHealth(False, f"no answer within {HEALTH_TIMEOUT_S:g} s")
        except Exception as exc:
            return EngineHealth(False, f"health check failed: {exc!r}")

    results = await asyncio.gather(*(check(engine) for engine in engines.values()))
    return dict(zip(engines, results, strict=True))


async def health(request: Request) -> JSONResponse:
    """`GET /health`: 200 `{"status": "ready"}` when every engine answers; 503 with the failing parts otherwise."""
    checks = await engine_health(request.state.app.parts)
    failing = {part: h.detail for part, h in checks.items() if not h.ok}
    if failing:
        return JSONResponse({"status": "not_ready", "failing": failing}, status_code=503)
    return JSONResponse({"status": "ready"})


def job_stats(board: JobBoard, now: float) -> dict[str, Any]:
    """Queue depth, throughput over the last minute, and latency percentiles of recent completed jobs."""
    recent = [job for job in board.finished if now - job[0] <= WINDOW_S]
    latencies = [seconds for _, status, seconds, _ in board.finished if status == "completed"]
    statuses: dict[str, int] = {}
    for _, status, _, _ in board.finished:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "running": board.running,
        "queued": board.queued,
        "max_running": board.max_running,
        "max_queued": board.max_queued,
        "jobs_per_s": sum(1 for job in recent if job[1] == "completed") / WINDOW_S,
        "tokens_per_s": sum(job[3] for job in recent) / WINDOW_S,
        "latency_s": percentiles(latencies, (50, 90, 99)),
        "statuses": statuses,
    }


async def sample_every(app: AppState, interval_s: float = STATS_EVERY_S) -> None:
    """The dashboard's tick, every `interval_s` seconds until cancelled (the lifespan runs it): a point of
    `app.history` every `SAMPLE_EVERY_S`, and the stats body rebuilt while someone reads it."""
    next_point = -math.inf
    while True:
        now = time.monotonic()
        try:
            if now >= next_point:
                app.history.sample(app.telemetry, len(app.live))
                next_point = now + SAMPLE_EVERY_S - interval_s / 2  # a late tick does not skip a point
            if app.stats_body.watched(now, WATCHED_S):
                await refresh_stats(app)
        except Exception:  # a failing tick must not end the dashboard: the next one tries again
            log.exception("the dashboard's sampler failed")
        await asyncio.sleep(interval_s)


# -- the routes --------------------------------------------------------------------------------------


def slo(ordered: list[float], target_s: float) -> dict[str, Any]:
    """The share of `ordered` (sorted values) within `target_s` (None without samples)."""
    met = bisect.bisect_right(ordered, target_s)
    return {"target_s": target_s, "samples": len(ordered), "met": round(met / len(ordered), 4) if ordered else None}


async def sorted_recent(telemetry: Telemetry) -> dict[str, list[float]]:
    """Each of `telemetry.recent`'s series, sorted (once, for every percentile and SLO tile of a build).

    A full series (8,192 values) takes about 0.7 ms to sort: the event loop gets a turn between two
    series, so that streams and requests wait behind one sort at most, not behind the whole build."""
    ordered = {}
    for name, values in telemetry.recent.items():
        ordered[name] = sorted(values.values())
        await asyncio.sleep(0)
    return ordered


def server_stats(app: AppState, recent: dict[str, list[float]]) -> dict[str, Any]:
    """Everything the page shows but the engines' health (which `refresh_stats` awaits), with the recent
    latency series as `sorted_recent` gives them."""
    prom, telemetry, settings = app.telemetry.prom, app.telemetry, app.settings
    tokens = counter_values(prom.key_tokens, "kind")
    key_rows: dict[str, dict[str, Any]] = {}
    for row in labelled(prom.key_requests, ("key_id", "outcome")):
        key_rows.setdefault(row["key_id"], {"id": row["key_id"]})[row["outcome"]] = row["count"]
    for row in labelled(prom.key_tokens, ("key_id", "kind")):
        key_rows.setdefault(row["key_id"], {"id": row["key_id"]})[f"{row['kind']}_tokens"] = row["count"]
    points = list(app.history.points)
    last_minute = [p for p in points if p["t"] >= time.time() - WINDOW_S]
    prompt_total = sum(counter_values(prom.prompt_tokens_total).values())
    cached = sum(counter_values(prom.cached_tokens).values())
    engine = dict(app.history.engine)
    hits, queries = engine.pop("prefix_cache_hits"), engine.pop("prefix_cache_queries")
    return {
        "live": {
            "connections": len(app.live),
            "slots_active": app.slots.active,
            "slots_max": app.slots.capacity,
            "generations": telemetry.active_generations,
        },
        "requests": {
            "by_status": counter_values(prom.requests, "status"),
            "by_route": labelled(prom.http_requests, ("route", "code")),
            "errors": counter_values(prom.errors, "type"),
        },
        "latency_s": {name: percentiles(values, (50, 95, 99), digits=5) for name, values in recent.items()},
        "throughput": {
            "tokens_per_s": round(sum(p["tokens_per_s"] for p in last_minute) / len(last_minute), 3)
            if last_minute
            else None,
            "tokens_total": sum(counter_values(prom.tokens).values()),
            "prompt_tokens_total": prompt_total,
        },
        "tool": {"decisions": counter_values(prom.tool, "status"), "latency_s": percentiles(recent["tool"])},
        "warm": {
            "cached_prompt_tokens": cached,
            "cached_ratio": round(cached / prompt_total, 4) if prompt_total else None,
            "prefix_cache_hit_ratio": round(hits / queries, 4) if hits is not None and queries else None,
        },
        "engine_gauges": engine,
        "refusals": {
            "rate_limited": counter_values(prom.rate_limited, "kind"),
            "rejected": counter_values(prom.rejected, "reason"),
            "limits_backend_failures": counter_values(prom.limits_failures, "mode"),
        },
        "keys": sorted(key_rows.values(), key=lambda row: row["id"]),
        "slo": {"ttft": slo(recent["ttft"], settings.slo_ttft_s), "itl": slo(recent["itl"], settings.slo_itl_s)},
        "series": points,
        "tokens_by_kind": tokens,
    }


async def refresh_stats(app: AppState, unless_fresh_within_s: float | None = None) -> None:
    """Build `/dashboard/stats`'s answer, encoded, into `app.stats_body` (the tick, or a read that found
    none); with `unless_fresh_within_s`, only when the body is older than that once the lock is held."""
    cached = app.stats_body
    async with cached.lock:
        if unless_fresh_within_s is not None and cached.fresh(time.monotonic(), unless_fresh_within_s):
            return  # built by the tick (or another read) while this one waited
        checks = await engine_health(app.parts)
        recent = await sorted_recent(app.telemetry)
        stats = {
            **server_stats(app, recent),
            "jobs": job_stats(app.jobs, time.monotonic()),
            "connections": {"active": app.slots.active, "max": app.slots.capacity},
            "engines": {part: {"ok": h.ok, "detail": h.detail} for part, h in checks.items()},
            "server_time": time.time(),
        }
        cached.body, cached.taken_at = encode_json(stats).encode(), time.monotonic()


async def dashboard_stats(request: Request) -> Response:
    """`GET /dashboard/stats`: what the dashboard shows (API key required), as the tick last built it."""
    app: AppState = request.state.app
    if authenticate(request) is None:
        return unauthorized()
    cached = app.stats_body
    cached.read_at = now = time.monotonic()
    if not cached.fresh(now, 2 * STATS_EVERY_S):  # nobody was watching: no tick built it
        await refresh_stats(app, unless_fresh_within_s=2 * STATS_EVERY_S)
    assert cached.body is not None
    return Response(cached.body, media_type="application/json", headers={"Cache-Control": "no-store"})


async def dashboard(request: Request) -> HTMLResponse:
    """`GET /dashboard`: the page (no data in it; its script asks for the key and fetches the stats)."""
    return HTMLResponse(PAGE, headers=PAGE_HEADERS)


async def dashboard_script(request: Request) -> Response:
    return Response(SCRIPT, media_type="text/javascript; charset=utf-8", headers=PAGE_HEADERS)


async def dashboard_style(request: Request) -> Response:
    return Response(STYLE, media_type="text/css; charset=utf-8", headers=PAGE_HEADERS)
