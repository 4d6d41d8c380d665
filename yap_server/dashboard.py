"""`GET /dashboard` (a plain HTML page), `GET /dashboard/stats` (its JSON source), `GET /health` (ready).

The page holds no data and needs no key; its script reads `?api_key=` from the page's own URL and
fetches `/dashboard/stats?api_key=...` every 2 s, which requires the key like every other data
route. Open `http://HOST:PORT/dashboard?api_key=KEY`. `/health` answers 200 only when every engine
answers its health check within `HEALTH_TIMEOUT_S` (ready, not merely up), 503 naming the failing parts otherwise.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from yap_engines import EngineHealth

from .auth import authenticate, unauthorized
from .jobs import JobBoard
from .state import AppState
from .stats import percentiles

HEALTH_TIMEOUT_S = 5.0
WINDOW_S = 60.0


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


async def dashboard_stats(request: Request) -> JSONResponse:
    """`GET /dashboard/stats`: what the dashboard shows (API key required)."""
    app: AppState = request.state.app
    if authenticate(request) is None:
        return unauthorized()
    checks = await engine_health(app.parts)
    return JSONResponse(
        {
            "jobs": job_stats(app.jobs, time.monotonic()),
            "connections": {"active": app.slots.active, "max": app.slots.capacity},
            "engines": {part: {"ok": h.ok, "detail": h.detail} for part, h in checks.items()},
            "server_time": time.time(),
        }
    )


async def dashboard(request: Request) -> HTMLResponse:
    """`GET /dashboard`: the page (no data in it; its script fetches the stats with the page's api_key)."""
    return HTMLResponse(PAGE)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Yap dashboard</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.3em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .8em;text-align:left}
.ok{color:#080}.bad{color:#b00}#err{color:#b00}
</style></head><body>
<h1>Yap dashboard</h1><div id="err"></div>
<table><tbody id="jobs"></tbody></table>
<table><thead><tr><th>engine</th><th>health</th></tr></thead><tbody id="engines"></tbody></table>
<p>Refreshes every 2 s. <span id="at"></span></p>
<script>
const key = new URLSearchParams(location.search).get("api_key") || "";
const fmt = v => v === null || v === undefined ? "-" : (typeof v === "number" ? v.toFixed(3) : v);
function rows(el, pairs) {
  el.replaceChildren(...pairs.map(([k, v, cls]) => {
    const tr = document.createElement("tr");
    for (const [text, c] of [[k], [v, cls]]) {
      const td = document.createElement("td"); td.textContent = text; if (c) td.className = c; tr.append(td);
    }
    return tr;
  }));
}
async function refresh() {
  try {
    const r = await fetch("dashboard/stats?api_key=" + encodeURIComponent(key), {cache: "no-store"});
    if (!r.ok) throw new Error(r.status === 401 ? "add ?api_key=YOUR_KEY to this page's URL" : "HTTP " + r.status);
    const s = await r.json(), j = s.jobs;
    rows(document.getElementById("jobs"), [
      ["running jobs", `${j.running} / ${j.max_running}`], ["queued jobs", `${j.queued} / ${j.max_queued}`],
      ["jobs/s (1 min)", fmt(j.jobs_per_s)], ["tokens/s (1 min)", fmt(j.tokens_per_s)],
      ["latency p50 / p90 / p99 (s)", [j.latency_s.p50, j.latency_s.p90, j.latency_s.p99].map(fmt).join(" / ")],
      ["finished by status", JSON.stringify(j.statuses)],
      ["connections", `${s.connections.active} / ${s.connections.max}`]]);
    rows(document.getElementById("engines"),
      Object.entries(s.engines).map(([k, h]) => [k, h.detail, h.ok ? "ok" : "bad"]));
    document.getElementById("err").textContent = "";
    document.getElementById("at").textContent = "Updated " + new Date().toLocaleTimeString();
  } catch (e) { document.getElementById("err").textContent = "Stats unavailable: " + e.message; }
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
