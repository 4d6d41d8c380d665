"""`yap bench server`: what the server adds on top of the engine, measured against a fast `FakeEngine`.

It streams the same replies twice, once straight from the engine in this process and once through
a real `yap serve --engine fake` process over WebSockets on 127.0.0.1, at each concurrency, and
reports: the server's added first-token latency (p50/p99), streamed tokens/s through the server as
a fraction of the raw engine, and cancel-to-`cancelled` latency. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from yap_engines import ChatRequest, FakeEngine, Sampling

from .client import YapClient
from .loopback import free_port

KEY = "bench-key"


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))], 3)


@dataclass(frozen=True)
class Stream:
    ttft_ms: float
    tokens: int


def _reply(tokens: int) -> str:
    return " ".join(f"word{i % 50}" for i in range(tokens)) + "."


async def raw_streams(engine: FakeEngine, concurrency: int, tokens: int) -> tuple[list[Stream], float]:
    """`concurrency` streams straight from the engine; returns the streams and the wall time."""

    async def one(i: int) -> Stream:
        request = ChatRequest(f"raw-{uuid.uuid4().hex}", [1, 2, i], Sampling(max_tokens=tokens))
        sent, first, count = time.perf_counter(), None, 0
        async for delta in engine.generate(request):
            if first is None and delta.text:
                first = time.perf_counter()
            if delta.usage is not None:
                count = delta.usage.completion_tokens
        return Stream(((first or time.perf_counter()) - sent) * 1000, count)

    started = time.perf_counter()
    streams = await asyncio.gather(*(one(i) for i in range(concurrency)))
    return list(streams), time.perf_counter() - started


async def server_streams(url: str, concurrency: int, tokens: int) -> tuple[list[Stream], float]:
    """`concurrency` sessions, one turn each, through the server."""
    import websockets

    async def one(i: int) -> Stream:
        async with websockets.connect(url, max_size=None) as ws:
            client = YapClient(ws, session_id=f"bench-{i}")
            await client.start("Be brief.")
            result = await client.turn(f"hello {i}", sampling={"max_tokens": tokens})
            return Stream(result.ttfb_ms or result.total_ms, (result.usage or {}).get("completion_tokens", 0))

    started = time.perf_counter()
    streams = await asyncio.gather(*(one(i) for i in range(concurrency)))
    return list(streams), time.perf_counter() - started


async def cancel_latencies(url: str, rounds: int) -> list[float]:
    """Milliseconds from sending `cancel` (after the first token) to receiving `cancelled`."""
    import websockets

    async with websockets.connect(url) as ws:
        client = YapClient(ws, session_id="cancels")
        await client.start("Be brief.")
        return [(await client.turn("talk", cancel_after_first_token=True)).total_ms for _ in range(rounds)]


def start_server(port: int, text: str, tokens_per_s: float, max_connections: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TEXT_API_KEY": KEY,
        "MAX_CONCURRENT_CONNECTIONS": str(max_connections),
        "ENGINE": "fake",
        "YAP_FAKE_TEXT": text,
        "YAP_FAKE_TOKENS_PER_S": str(tokens_per_s),
        "YAP_PORT": str(port),
        "LOG_LEVEL": "warning",
        "CHAT_MAX_OUT": "4096",
        "DEPLOY_MODE": "chat",
        "WS_MAX_MESSAGES_PER_WINDOW": "0",
        "WS_MAX_CANCELS_PER_WINDOW": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "yap_server.cli", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def _wait_ready(port: int, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("the bench server did not start")


async def bench_server(
    concurrencies: tuple[int, ...] = (1, 16, 64),
    tokens: int = 200,
    tokens_per_s: float = 2000,
    rounds: int = 3,
    cancels: int = 50,
) -> dict[str, Any]:
    """Run the comparison; `rounds` repeats each concurrency level."""
    text = _reply(tokens)
    engine = FakeEngine(text=text, tokens_per_s=tokens_per_s)
    port = free_port()
    process = start_server(port, text, tokens_per_s, max(concurrencies) + 8)
    report: dict[str, Any] = {"tokens_per_reply": tokens, "engine_tokens_per_s_per_stream": tokens_per_s, "levels": {}}
    try:
        await _wait_ready(port)
        url = f"ws://127.0.0.1:{port}/ws?api_key={KEY}"
        for level in concurrencies:
            raw_ttft, srv_ttft, raw_rate, srv_rate = [], [], [], []
            for _ in range(rounds):
                raw, raw_wall = await raw_streams(engine, level, tokens)
                served, srv_wall = await server_streams(url, level, tokens)
                raw_ttft += [s.ttft_ms for s in raw]
                srv_ttft += [s.ttft_ms for s in served]
                raw_rate.append(sum(s.tokens for s in raw) / raw_wall)
                srv_rate.append(sum(s.tokens for s in served) / srv_wall)
            raw_tps, srv_tps = sum(raw_rate) / rounds, sum(srv_rate) / rounds
            report["levels"][str(level)] = {
                "raw_ttft_ms_p50": _percentile(raw_ttft, 0.5),
                "server_ttft_ms_p50": _percentile(srv_ttft, 0.5),
                "server_ttft_ms_p99": _percentile(srv_ttft, 0.99),
                "added_ttft_ms_p50": round(_percentile(srv_ttft, 0.5) - _percentile(raw_ttft, 0.5), 3),
                "added_ttft_ms_p99": round(_percentile(srv_ttft, 0.99) - _percentile(raw_ttft, 0.99), 3),
                "raw_tokens_per_s": round(raw_tps, 1),
                "server_tokens_per_s": round(srv_tps, 1),
                "server_fraction_of_raw": round(srv_tps / raw_tps, 3),
            }
        latencies = await cancel_latencies(url, cancels)
        report["cancel_to_cancelled_ms"] = {"p50": _percentile(latencies, 0.5), "p99": _percentile(latencies, 0.99)}
    finally:
        process.terminate()
        process.wait(timeout=30)
    return report
