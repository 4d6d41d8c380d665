"""`yap bench telemetry`: the server's streamed tokens/s with telemetry off and on.

It also reports this process's CPU time per streamed token (server and clients together), which
a busy machine disturbs far less than wall-clock rates.

Off is the default (Prometheus only, nothing configured). On adds OpenTelemetry (spans and
metrics exported over OTLP/HTTP to a local collector stub) and Sentry (a transport that drops
events). Both run an in-process uvicorn server on 127.0.0.1 over a `FakeEngine`, with the clients
of `bench.server_streams` in the same process; rounds alternate off/on so drift hits both alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from yap_engines import EngineSettings, FakeEngine
from yap_server.app import create_app
from yap_server.settings import ServerSettings
from yap_server.telemetry import Telemetry, TelemetrySettings

from .bench_server import KEY, _reply, server_streams
from .loopback import serve_on_loopback

OtlpPost = tuple[str, dict[str, str], bytes]  # path, headers, body


@contextlib.contextmanager
def otlp_sink(posts: list[OtlpPost] | None = None) -> Iterator[str]:
    """A local OTLP/HTTP endpoint answering every POST with 200; yields its base URL.

    Each POST is appended to `posts` when given (tests read the exports), else forgotten.
    """

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if posts is not None:
                posts.append((self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _telemetry(on: bool, sink_url: str) -> Telemetry:
    if not on:
        quiet: dict[str, Any] = {"gpu_metrics": False}
        return Telemetry.build(TelemetrySettings(**quiet))
    import sentry_sdk

    class DropEvents(sentry_sdk.Transport):
        def capture_envelope(self, envelope: Any) -> None:
            pass

    exporting: dict[str, Any] = {
        "gpu_metrics": False,
        "otlp_endpoint": sink_url,
        "traces_export_interval_ms": 1000,
        "metrics_export_interval_ms": 1000,
        "sentry_dsn": "https://public@sentry.invalid/1",
    }
    settings = TelemetrySettings(**exporting)
    return Telemetry.build(settings, [KEY], sentry_transport=DropEvents())


@contextlib.asynccontextmanager
async def _serving(telemetry: Telemetry, text: str, tokens_per_s: float, connections: int) -> AsyncIterator[str]:
    unlimited: dict[str, Any] = {
        "text_api_key": KEY,
        "max_concurrent_connections": connections,
        "deploy_mode": "chat",
        "ws_max_messages_per_window": 0,
        "ws_max_cancels_per_window": 0,
    }
    engine = FakeEngine(text=text, tokens_per_s=tokens_per_s)
    budget = EngineSettings.from_env(chat_max_out=4096)
    app = create_app(ServerSettings(**unlimited), engines={"chat": engine}, engine_settings=budget, telemetry=telemetry)
    try:
        async with serve_on_loopback(app) as port:
            yield f"ws://127.0.0.1:{port}/ws?api_key={KEY}"
    finally:
        await asyncio.to_thread(telemetry.shutdown)


async def bench_telemetry(
    concurrency: int = 16, tokens: int = 200, tokens_per_s: float = 0.0, rounds: int = 5
) -> dict[str, Any]:
    """Streamed tokens/s through the server, telemetry off vs on (mean over `rounds` alternating runs).

    `tokens_per_s=0` lets the fake engine stream as fast as it can, so the server's own cost shows.
    """
    text = _reply(tokens)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    cpu_us: dict[str, list[float]] = {"off": [], "on": []}
    with otlp_sink() as sink_url:
        for _ in range(rounds):
            for mode in ("off", "on"):
                async with _serving(_telemetry(mode == "on", sink_url), text, tokens_per_s, concurrency + 4) as url:
                    await server_streams(url, concurrency, tokens)  # warm-up
                    cpu_before = time.process_time()
                    streams, wall = await server_streams(url, concurrency, tokens)
                    streamed = sum(s.tokens for s in streams)
                    cpu_us[mode].append((time.process_time() - cpu_before) / streamed * 1e6)
                    rates[mode].append(streamed / wall)
    off, on = (sum(rates[m]) / rounds for m in ("off", "on"))
    cpu_off, cpu_on = (sum(cpu_us[m]) / rounds for m in ("off", "on"))
    return {
        "concurrency": concurrency,
        "tokens_per_reply": tokens,
        "rounds": rounds,
        "off": {"tokens_per_s": round(off, 1), "runs": [round(r, 1) for r in rates["off"]]},
        "on": {"tokens_per_s": round(on, 1), "runs": [round(r, 1) for r in rates["on"]]},
        "on_fraction_of_off": round(on / off, 3),
        "cpu_us_per_token": {"off": round(cpu_off, 1), "on": round(cpu_on, 1)},
    }
