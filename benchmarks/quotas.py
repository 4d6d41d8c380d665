"""Per-key quota and dashboard figures, printed as JSON (FakeEngine, loopback, this machine).

    python benchmarks/quotas.py [--out runs/quotas.json] [--deployed-runs N]

1. rpm 50, 200 concurrent `/v1/chat/completions`: how many were admitted (one process).
2. rpm 50 across two server processes sharing a Redis (`redis-server` on a free port): admitted.
3. tpm 1,000, four concurrent requests of max_tokens 300: status codes, and what the engine saw.
4. Retry-After: a refused client sleeps for it and tries again (the window shortened to 2 s).
5. Refusal latency: `Quotas.admit` refusing (in process), and a 429 over loopback, p50/p99: the round trip
   as the client saw it, and the server's share (from the app's ASGI call to its end).
6. `/dashboard/stats` latency under 16 streaming `/ws` sessions, p50/p99: the round trip over loopback
   and the server's share.

In 5 and 6 the clients run in the server's process and event loop (as the tests do), so a round trip also
holds the client's own work and whatever else the loop was doing; the server's share holds the loop's waits
too. 7 measures both round trips again as deployed: the server in a process of its own (run as `yap serve`
runs it), the 16 streaming sessions in a second process, the timed client in a third; then again with the
server pinned to one CPU and the clients to the others (as when clients are other machines).
`--deployed-runs N` makes N fresh runs of each and lists each run's p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import websockets

from yap_cli.loopback import free_port, listening, serve_on_loopback, stop_process
from yap_engines import EngineSettings, FakeEngine
from yap_server import quotas
from yap_server.app import create_app
from yap_server.keys import ApiKey, KeyEntry, KeyLimits, hash_secret, write_keys_file
from yap_server.settings import ServerSettings
from yap_server.stats import percentiles
from yap_server.telemetry import Telemetry, TelemetrySettings

SECRET = "bench-secret-0123456789"
ENV_KEY = "bench-env-key"
WARMUP_S = 8.0  # streaming sessions before /dashboard/stats is timed
SAMPLES = 1000  # timed requests of each kind when the server runs in its own process (p99: the 10th worst)


class ServerTime:
    """ASGI middleware: how long the app took over each HTTP request to `path`, from the call to its end
    (the server's share of a round trip)."""

    def __init__(self, app: Any, path: str, seconds: list[float]) -> None:
        self.app, self.path, self.seconds = app, path, seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.seconds.append(time.perf_counter() - started)


def ms(values: list[float]) -> dict[str, float]:
    """p50 and p99 of `values` (seconds) in milliseconds."""
    return {k: round(v * 1000, 3) for k, v in percentiles(values, (50, 99)).items() if v is not None}


class CountingFake(FakeEngine):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.seen = 0

    def generate(self, request: Any) -> Any:
        self.seen += 1
        return super().generate(request)


def keys(directory: Path, **limits: int) -> Path:
    path = directory / "keys.toml"
    write_keys_file(path, [KeyEntry(ApiKey("bench", KeyLimits(**limits)), hash_secret(SECRET))])
    return path


def settings(path: Path, **overrides: Any) -> ServerSettings:
    values = {"text_api_key": ENV_KEY, "keys_file": path, "max_concurrent_connections": 256, "deploy_mode": "chat"}
    return ServerSettings(**{**values, **overrides})


async def chat(http: httpx.AsyncClient, max_tokens: int = 4, key: str = SECRET) -> httpx.Response:
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    return await http.post("/v1/chat/completions", json=body, headers={"X-API-Key": key})


async def rpm_one_process(directory: Path) -> dict[str, Any]:
    engine = CountingFake(seed=1)
    app = create_app(settings(keys(directory, rpm=50)), engines={"chat": engine})
    async with serve_on_loopback(app) as port:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as http:
            answers = await asyncio.gather(*(chat(http) for _ in range(200)))
    codes = [a.status_code for a in answers]
    return {"requests": 200, "admitted": codes.count(200), "refused_429": codes.count(429), "engine_saw": engine.seen}


@contextlib.contextmanager
def started(
    command: list[str], port: int, env: dict[str, str] | None = None, cpus: set[int] | None = None
) -> Iterator[None]:
    """A server process listening on `port` for the block's duration (on `cpus` only, when given)."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=on_cpus(cpus)
    )
    try:
        deadline = time.monotonic() + 120
        while not listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start")
            time.sleep(0.1)
        yield
    finally:
        stop_process(process)


def on_cpus(cpus: set[int] | None) -> Callable[[], None] | None:
    """A child's `preexec_fn` that keeps it on `cpus` (None: wherever the kernel puts it)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def server_and_client_cpus() -> tuple[set[int], set[int]] | None:
    """One CPU for the server, the others for every client process (None on a single-CPU machine)."""
    available = sorted(os.sched_getaffinity(0))
    return ({available[0]}, set(available[1:])) if len(available) > 1 else None


async def rpm_two_workers(directory: Path) -> dict[str, Any]:
    if shutil.which("redis-server") is None:
        return {"skipped": "redis-server is not installed (apt-get install -y redis-server)"}
    redis_port = free_port()
    redis_command = [
        "redis-server",
        "--port",
        str(redis_port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    path = keys(directory, rpm=50)
    with contextlib.ExitStack() as stack:
        stack.enter_context(started(redis_command, redis_port))
        ports = [free_port(), free_port()]
        for port in ports:
            command = [sys.executable, __file__, "--worker", str(port), str(path), f"redis://127.0.0.1:{redis_port}/0"]
            stack.enter_context(started(command, port, env=dict(os.environ)))
        limits = httpx.Limits(max_connections=200)
        clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", limits=limits, timeout=60) for p in ports]
        try:
            answers = await asyncio.gather(*(chat(clients[i % 2]) for i in range(200)))
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
    codes = [a.status_code for a in answers]
    admitted = codes.count(200)
    return {
        "workers": 2,
        "requests": 200,
        "admitted": admitted,
        "over_limit_pct": round(max(admitted - 50, 0) / 50 * 100, 2),
    }


async def tpm_reserve(directory: Path) -> dict[str, Any]:
    engine = CountingFake(seed=1, tokens_per_s=40)
    app = create_app(
        settings(keys(directory, tpm=1000)), engines={"chat": engine}, engine_settings=EngineSettings(chat_max_out=300)
    )
    async with serve_on_loopback(app) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            answers = await asyncio.gather(*(chat(http, 300) for _ in range(4)))
    return {"codes": sorted(a.status_code for a in answers), "engine_saw": engine.seen}


async def retry_after(directory: Path) -> dict[str, Any]:
    quotas.MINUTE_S = 2
    try:
        app = create_app(settings(keys(directory, rpm=2)), engines={"chat": FakeEngine(seed=1)})
        async with serve_on_loopback(app) as port:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                first = [(await chat(http)).status_code for _ in range(2)]
                refused = await chat(http)
                wait = float(refused.headers["retry-after"])
                await asyncio.sleep(wait)
                again = await chat(http)
    finally:
        quotas.MINUTE_S = 60
    return {
        "window_s": 2,
        "first": first,
        "refused": refused.status_code,
        "retry_after_s": wait,
        "retry": again.status_code,
    }


async def refusal_latency(directory: Path) -> dict[str, Any]:
    telemetry = Telemetry(TelemetrySettings(), None, None)
    counters = quotas.Quotas(settings(keys(directory)), telemetry)
    key = ApiKey("bench", KeyLimits(rpm=1, tpm=100))
    await counters.admit(key, 10)
    inside = []
    for _ in range(2000):
        started_at = time.perf_counter()
        with contextlib.suppress(quotas.QuotaExceededError):
            await counters.admit(key, 10)
        inside.append(time.perf_counter() - started_at)
    app = create_app(settings(keys(directory, rpm=1)), engines={"chat": FakeEngine(seed=1)})
    round_trips: list[float] = []
    server: list[float] = []
    app.add_middleware(ServerTime, path="/v1/chat/completions", seconds=server)
    async with serve_on_loopback(app) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            await chat(http)
            server.clear()
            for _ in range(500):
                started_at = time.perf_counter()
                assert (await chat(http)).status_code == 429
                round_trips.append(time.perf_counter() - started_at)
    return {"admit_refusal_ms": ms(inside), "http_429_round_trip_ms": ms(round_trips), "http_429_server_ms": ms(server)}


async def stream_turns(origin: str, index: int, stop: asyncio.Event) -> None:
    """One `/ws` session streaming replies of 150 tokens back to back until `stop` is set."""
    async with websockets.connect(origin, additional_headers={"X-API-Key": ENV_KEY}) as ws:

        def frame(kind: str, rid: str, **payload: Any) -> str:
            envelope = {"type": kind, "session_id": f"s{index}", "request_id": rid, "payload": payload}
            return json.dumps(envelope)

        await ws.send(frame("start", "r0", chat_prompt="Talk."))
        turn = 0
        while not stop.is_set():
            turn += 1
            await ws.send(frame("message", f"r{turn}", user_utterance="go on", sampling={"max_tokens": 150}))
            while json.loads(await ws.recv())["type"] not in ("done", "cancelled", "error"):
                pass


async def stats_under_load(directory: Path) -> dict[str, Any]:
    engine = FakeEngine(seed=1, tokens_per_s=50)
    app = create_app(settings(keys(directory)), engines={"chat": engine})
    server: list[float] = []
    app.add_middleware(ServerTime, path="/dashboard/stats", seconds=server)
    async with serve_on_loopback(app) as port:
        origin = f"ws://127.0.0.1:{port}/ws"
        stop = asyncio.Event()

        sessions = [asyncio.create_task(stream_turns(origin, i, stop)) for i in range(16)]
        await asyncio.sleep(WARMUP_S)  # the first turns import what serving needs (a cold heap makes GC pauses)
        timings = []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            for _ in range(300):
                started_at = time.perf_counter()
                assert (await http.get("/dashboard/stats", headers={"X-API-Key": ENV_KEY})).status_code == 200
                timings.append(time.perf_counter() - started_at)
                await asyncio.sleep(0.01)
        stop.set()
        for task in sessions:
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
    return {"sessions": 16, "stats_ms": ms(timings), "stats_server_ms": ms(server)}


async def separate_processes(directory: Path, pinned: bool = False) -> dict[str, Any]:
    """The two round trips as deployed: the server in a process of its own (one uvicorn worker, as `yap
    serve` runs), the 16 streaming sessions in a second process, and the timed requests from a third, fresh
    one (`--timed`): neither the clients' work nor this process's heap shares the measured path.

    `pinned`: the server on one CPU and the clients on the others, as when the clients run on other
    machines; unpinned, the kernel may put the server and the 16 sessions' client on one CPU, and a request
    then waits out the client's time slice (milliseconds)."""
    split = server_and_client_cpus() if pinned else None
    server_cpus, client_cpus = split if split is not None else (None, None)
    path = keys(directory, rpm=1)
    port = free_port()
    shares = directory / "server-shares.json"
    with contextlib.ExitStack() as stack:
        serve = [sys.executable, __file__, "--worker", str(port), str(path), "", "50", str(shares)]
        stack.enter_context(started(serve, port, env=dict(os.environ), cpus=server_cpus))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            for _ in range(50):  # untimed: a fresh process's first requests import and allocate what serving needs
                await chat(http)
            await asyncio.sleep(3.0)  # and its start-up settles (the first ticks of its periodic tasks)
            refusals = await timed_in_own_process(port, "refusal", client_cpus)
            stack.enter_context(running([sys.executable, __file__, "--streams", str(port), "16"], client_cpus))
            await asyncio.sleep(WARMUP_S)
            timings = await timed_in_own_process(port, "stats", client_cpus)
            streamed = (await http.get("/metrics", headers={"X-API-Key": ENV_KEY})).text
    tokens = sum(
        float(line.split()[-1]) for line in streamed.splitlines() if line.startswith("yap_generation_tokens_total")
    )
    server = json.loads(shares.read_text())  # written by the worker once it stopped
    return {
        "cpus": {"server": sorted(server_cpus), "clients": sorted(client_cpus)}
        if server_cpus and client_cpus
        else None,
        "http_429_round_trip_ms": ms(refusals),
        "http_429_server_ms": ms(server["/v1/chat/completions"][-SAMPLES:]),
        "sessions": 16,
        "stats_ms": ms(timings),
        "stats_server_ms": ms(server["/dashboard/stats"][-SAMPLES:]),
        "tokens_streamed": tokens,
    }


async def timed_in_own_process(port: int, kind: str, cpus: set[int] | None = None) -> list[float]:
    """`SAMPLES` round trips of `kind` timed by a fresh `--timed` process (on `cpus` when given): their seconds."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--timed", str(port), kind, stdout=subprocess.PIPE, preexec_fn=on_cpus(cpus)
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the timed {kind} client failed ({process.returncode})")
    seconds: list[float] = json.loads(output)
    return seconds


async def timed(port: int, kind: str) -> None:
    """`--timed PORT KIND`: `SAMPLES` round trips, printed as a JSON list of seconds. KIND "refusal": a
    `/v1/chat/completions` the key's quota refuses (429), back to back; "stats": `/dashboard/stats`, one
    every 10 ms. The first requests, untimed, open the connection and warm this process's paths."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:

        async def one() -> None:
            if kind == "refusal":
                assert (await chat(http)).status_code == 429
            else:
                assert (await http.get("/dashboard/stats", headers={"X-API-Key": ENV_KEY})).status_code == 200

        pause = 0.01 if kind == "stats" else 0.0
        for _ in range(20):
            await one()
        seconds = []
        for _ in range(SAMPLES):
            started_at = time.perf_counter()
            await one()
            seconds.append(time.perf_counter() - started_at)
            await asyncio.sleep(pause)
    print(json.dumps(seconds))


@contextlib.contextmanager
def running(command: list[str], cpus: set[int] | None = None) -> Iterator[None]:
    """A helper process for the block's duration (terminated after it), on `cpus` only when given."""
    process = subprocess.Popen(
        command, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=on_cpus(cpus)
    )
    try:
        yield
    finally:
        stop_process(process)


async def streams(port: int, count: int) -> None:
    """`--streams PORT N`: N sessions streaming until this process is terminated."""
    stop = asyncio.Event()
    origin = f"ws://127.0.0.1:{port}/ws"
    await asyncio.gather(*(stream_turns(origin, i, stop) for i in range(count)))


async def main(out: Path | None, deployed_runs: int) -> None:
    report: dict[str, Any] = {"load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in (
            ("rpm_one_process", rpm_one_process),
            ("rpm_two_workers_redis", rpm_two_workers),
            ("tpm_reserve", tpm_reserve),
            ("retry_after", retry_after),
            ("refusal_latency", refusal_latency),
            ("dashboard_stats_under_16_sessions", stats_under_load),
            ("separate_processes", separate_processes),
        ):
            directory = Path(tmp) / name
            directory.mkdir()
            report[name] = await run(directory)
            print(name, json.dumps(report[name]), flush=True)
        runs: dict[str, list[dict[str, Any]]] = {"unpinned": [report["separate_processes"]], "pinned": []}
        for again in range(2 * deployed_runs - 1):  # fresh processes each time; pinned and not, alternating
            placement = "pinned" if again % 2 == 0 else "unpinned"
            directory = Path(tmp) / f"separate_processes_{again}"
            directory.mkdir()
            runs[placement].append(await separate_processes(directory, pinned=placement == "pinned"))
            print("separate_processes", placement, json.dumps(runs[placement][-1]), flush=True)
        report["separate_processes_p99_ms"] = {
            placement: {
                figure: [run[figure]["p99"] for run in each]
                for figure in ("stats_ms", "stats_server_ms", "http_429_round_trip_ms", "http_429_server_ms")
            }
            for placement, each in runs.items()
        }
    report["load_average_after"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if out is not None:
        await asyncio.to_thread(_write, out, text + "\n")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def worker(port: int, path: str, redis_url: str, tokens_per_s: float | None = None, shares: str = "") -> None:
    """`--worker PORT KEYS REDIS_URL [TOKENS_PER_S [SHARES]]`: one server process, run as `yap serve` runs it
    (no Redis when REDIS_URL is empty). With SHARES, a JSON file written once the server has stopped: the
    server's share of each `/dashboard/stats` and `/v1/chat/completions` request, in seconds."""
    from yap_server.serving import uvicorn_server

    options = {"limits_redis_url": redis_url} if redis_url else {}
    engine = FakeEngine(seed=1, tokens_per_s=tokens_per_s) if tokens_per_s else FakeEngine(seed=1)
    app = create_app(settings(Path(path), **options), engines={"chat": engine})
    timed: dict[str, list[float]] = {"/dashboard/stats": [], "/v1/chat/completions": []}
    for route, seconds in timed.items():
        app.add_middleware(ServerTime, path=route, seconds=seconds)
    if shares:  # uvicorn re-raises the SIGTERM it shut down on to the handler it found: let that one return
        signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn_server(app, host="127.0.0.1", port=port).run()
    if shares:
        Path(shares).write_text(json.dumps(timed))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        rate = float(sys.argv[5]) if len(sys.argv) > 5 else None
        worker(int(sys.argv[2]), sys.argv[3], sys.argv[4], rate, sys.argv[6] if len(sys.argv) > 6 else "")
    elif len(sys.argv) > 1 and sys.argv[1] == "--timed":
        asyncio.run(timed(int(sys.argv[2]), sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--streams":
        asyncio.run(streams(int(sys.argv[2]), int(sys.argv[3])))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--out", type=Path)
        parser.add_argument(
            "--deployed-runs",
            type=int,
            default=1,
            help="run the separate-process measurement N times unpinned and N times pinned (p99 of each)",
        )
        arguments = parser.parse_args()
        asyncio.run(main(arguments.out, arguments.deployed_runs))
