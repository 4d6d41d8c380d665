"""`yap bench server`: what the server adds on top of the engine, for each `STREAM_FLUSH_MS`.

FakeEngine part: the same replies are streamed straight from a `FakeEngine` in this process (the raw
engine) and through a real `yap serve --engine fake` process over `/ws` on 127.0.0.1, at each number of
sessions (one turn each), for each flush setting (a fresh server per setting). Reported per setting and
sessions (medians over `rounds`):
- `share_of_raw`: tokens/s through the server over the raw engine's tokens/s;
- `added_ttft_ms_p50`/`_p99`: the server's first-token latency (client send to first `token` frame) minus the
  raw engine's (request to first delta), at the same percentile;
- `cpu_us_per_token`: the server process's CPU time (user + system, from /proc/<pid>/stat, so the server's
  own process only, not the client) over the round, divided by the tokens it streamed;
- `frames_per_s`: `token` frames received per second of the round;
- `frame_gap_ms_p99`: the p99 gap between consecutive frames of one session, over all sessions.

vLLM part (`--vllm`): the demo model on vLLM CPU, `sessions` concurrent one-turn streams over
`/v1/chat/completions` SSE, read by the same client, against vLLM's own OpenAI server on the same model,
one after the other in the same run, on the same engine configuration (eager, `max_num_seqs` = sessions,
the same KV cache, context and sampling). Both servers run as separate processes; CPU is the API
process's (vLLM's engine core is a child process in both and is not counted). vLLM's server keeps its
default `--stream-interval 1`.

The report is one JSON object; `plot_report` draws tokens/s and first-token latency against sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yap_engines import ChatRequest, FakeEngine, Sampling
from yap_server.stats import percentiles

from .loopback import free_port
from .server_supervisor import start_server, stop_server

KEY = "bench-key"
FLUSH_SETTINGS_MS = (0.0, 10.0, 25.0, 50.0)
SESSIONS = (1, 16, 64, 256)


def _percentile(values: list[float], point: int) -> float:
    return percentiles(values, (point,), digits=3)[f"p{point}"] or 0.0


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


@dataclass
class Stream:
    """One client stream: first-token latency, tokens, and the arrival time of each text frame."""

    ttft_ms: float
    tokens: int
    frame_times: list[float] = field(default_factory=list)

    @property
    def gaps_ms(self) -> list[float]:
        return [(b - a) * 1000 for a, b in itertools.pairwise(self.frame_times)]


def _reply(tokens: int) -> str:
    return " ".join(f"word{i % 50}" for i in range(tokens)) + "."


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def ws_streams(url: str, concurrency: int, tokens: int) -> tuple[list[Stream], float]:
    """`concurrency` `/ws` sessions, one turn each (connected first, then all turns at once)."""
    import orjson
    import websockets

    connections = [await websockets.connect(url, max_size=None) for _ in range(concurrency)]

    async def one(i: int, ws: Any) -> Stream:
        start = {
            "type": "start",
            "session_id": f"bench-{i}",
            "request_id": "t",
            "payload": {"chat_prompt": "Be brief.", "user_utterance": f"hello {i}", "sampling": {"max_tokens": tokens}},
        }
        sent = time.perf_counter()
        await ws.send(orjson.dumps(start).decode())
        stream = Stream(0.0, 0)
        async for raw in ws:
            message = orjson.loads(raw)
            kind = message["type"]
            if kind == "token":
                stream.frame_times.append(time.perf_counter())
            elif kind in ("done", "error", "cancelled"):
                stream.tokens = ((message["payload"].get("usage") or {}).get("completion_tokens")) or 0
                break
        stream.ttft_ms = ((stream.frame_times[0] if stream.frame_times else time.perf_counter()) - sent) * 1000
        return stream

    try:
        started = time.perf_counter()
        streams = await asyncio.gather(*(one(i, ws) for i, ws in enumerate(connections)))
        return list(streams), time.perf_counter() - started
    finally:
        await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)


async def sse_lines(response: Any) -> AsyncIterator[str]:
    """The lines of an event stream as SSE defines them (ended by LF, CRLF or CR only: a U+2028 that a
    server leaves raw inside a JSON string does not end one, as it would for httpx's `aiter_lines`)."""
    pending = ""
    async for text in response.aiter_text():
        lines = (pending + text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        pending = lines.pop()
        for line in lines:
            yield line
    if pending:
        yield pending


async def sse_streams(base: str, model: str, concurrency: int, tokens: int, key: str) -> tuple[list[Stream], float]:
    """`concurrency` streamed `/v1/chat/completions` requests (usage included), read line by line."""
    import httpx
    import orjson

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def one(i: int) -> Stream:
            body = {
                "model": model,
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"hello {i}"}],
                "max_tokens": tokens,
                "temperature": 1.0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            stream = Stream(0.0, 0)
            sent = time.perf_counter()
            headers = {"Authorization": f"Bearer {key}", "X-API-Key": key}
            async with client.stream("POST", f"{base}/chat/completions", json=body, headers=headers) as response:
                async for line in sse_lines(response):
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = orjson.loads(line[6:])
                    if chunk.get("usage"):
                        stream.tokens = chunk["usage"]["completion_tokens"]
                    choices = chunk.get("choices") or []
                    if choices and (choices[0].get("delta") or {}).get("content"):
                        stream.frame_times.append(time.perf_counter())
            stream.ttft_ms = ((stream.frame_times[0] if stream.frame_times else time.perf_counter()) - sent) * 1000
            return stream

        started = time.perf_counter()
        streams = await asyncio.gather(*(one(i) for i in range(concurrency)))
        return list(streams), time.perf_counter() - started


server_streams = ws_streams  # the name `yap bench telemetry` reads it by


def yap_env(flush_ms: float, max_connections: int, **env: str) -> dict[str, str]:
    """The environment of a bench `yap serve`: `STREAM_FLUSH_MS=flush_ms`, no rate limits, FakeEngine unless `env`
    says otherwise."""
    return {
        "TEXT_API_KEY": KEY,
        "MAX_CONCURRENT_CONNECTIONS": str(max_connections),
        "ENGINE": "fake",
        "LOG_LEVEL": "warning",
        "CHAT_MAX_OUT": "4096",
        "DEPLOY_MODE": "chat",
        "WS_MAX_MESSAGES_PER_WINDOW": "0",
        "WS_MAX_CANCELS_PER_WINDOW": "0",
        "STREAM_FLUSH_MS": str(flush_ms),
        # the embeddings encoder's one-time load (seconds of CPU in a worker thread) would share the CPU
        # and the GIL with the first rounds; nothing here embeds
        "EMBED_PRELOAD": "0",
        **env,
    }


YAP_SERVE = [sys.executable, "-m", "yap_cli", "serve", "--port", "{port}"]


def _start(command: list[str], port: int, runs: Path, env: dict[str, str], health_path: str, within_s: float) -> int:
    """`start_server`, then the pid of a healthy server; else `RuntimeError` with the end of its log."""
    manifest = start_server(command, port=port, runs_dir=runs, health_path=health_path, deadline_s=within_s, env=env)
    if manifest.health == "ready":
        return manifest.pid
    tail = " | ".join(Path(manifest.log_file).read_text(errors="replace").strip().splitlines()[-5:])
    if manifest.health == "down":
        raise RuntimeError(f"the bench server exited: {tail}")
    raise RuntimeError(f"the bench server was not healthy within {within_s:g} s: {tail}")


@contextlib.asynccontextmanager
async def running(
    command: list[str], port: int, env: dict[str, str], health_path: str, within_s: float = 240
) -> AsyncIterator[int]:
    """Run a server on 127.0.0.1:`port` through the harness's supervisor (the start, health poll and stop of
    `yap server start|stop`), its log and manifest in a temporary folder; yields its pid once `health_path`
    answers 200. A server that exits, or is not healthy within `within_s`, raises `RuntimeError` with the end
    of its log. On leaving, the server's process group is stopped and its port is free again.
    """
    with tempfile.TemporaryDirectory(prefix="yap-bench-") as folder:
        runs = Path(folder)
        try:
            yield await asyncio.to_thread(_start, command, port, runs, env, health_path, within_s)
        finally:
            await asyncio.to_thread(stop_server, runs)


def _summary(
    streams: list[list[Stream]], walls: list[float], cpu: list[float], raw_ttft: list[float] | None = None
) -> dict[str, Any]:
    """Medians over rounds of one configuration (`streams[r]`, `walls[r]`, `cpu[r]` per round)."""
    rates = [sum(s.tokens for s in rs) / wall for rs, wall in zip(streams, walls, strict=True)]
    frames = [sum(len(s.frame_times) for s in rs) / wall for rs, wall in zip(streams, walls, strict=True)]
    per_token = [c / max(1, sum(s.tokens for s in rs)) * 1e6 for rs, c in zip(streams, cpu, strict=True)]
    ttft = [s.ttft_ms for rs in streams for s in rs]
    gaps = [g for rs in streams for s in rs for g in s.gaps_ms]
    out: dict[str, Any] = {
        "tokens_per_s": round(_median(rates), 1),
        "ttft_ms_p50": _percentile(ttft, 50),
        "ttft_ms_p99": _percentile(ttft, 99),
        "cpu_us_per_token": round(_median(per_token), 2),
        "frames_per_s": round(_median(frames), 1),
        "frame_gap_ms_p99": _percentile(gaps, 99),
    }
    if raw_ttft is not None:
        out["added_ttft_ms_p50"] = round(out["ttft_ms_p50"] - _percentile(raw_ttft, 50), 3)
        out["added_ttft_ms_p99"] = round(out["ttft_ms_p99"] - _percentile(raw_ttft, 99), 3)
    return out


async def bench_fake(
    flush_settings: tuple[float, ...], sessions: tuple[int, ...], tokens: int, tokens_per_s: float, rounds: int
) -> dict[str, Any]:
    """The FakeEngine part: per flush setting and sessions, the server against the raw engine."""
    text = _reply(tokens)
    engine = FakeEngine(text=text, tokens_per_s=tokens_per_s)
    raw: dict[int, dict[str, Any]] = {}
    for level in sessions:  # the raw engine does not depend on the flush setting
        raw_runs = [await raw_streams(engine, level, tokens) for _ in range(rounds)]
        raw[level] = {
            "tokens_per_s": round(_median([sum(s.tokens for s in rs) / wall for rs, wall in raw_runs]), 1),
            "ttft": [s.ttft_ms for rs, _ in raw_runs for s in rs],
        }
    report: dict[str, Any] = {
        "raw": {str(k): {"tokens_per_s": v["tokens_per_s"], "ttft_ms_p50": _percentile(v["ttft"], 50)}
                for k, v in raw.items()},
        "flush": {},
    }  # fmt: skip
    env = {"YAP_FAKE_TEXT": text, "YAP_FAKE_TOKENS_PER_S": str(tokens_per_s)}
    for flush_ms in flush_settings:
        port = free_port()
        levels: dict[str, Any] = {}
        async with running(YAP_SERVE, port, yap_env(flush_ms, max(sessions) + 16, **env), "/healthz") as pid:
            url = f"ws://127.0.0.1:{port}/ws?api_key={KEY}"
            await ws_streams(url, 4, tokens)  # warm-up
            for level in sessions:
                runs, walls, cpu = [], [], []
                for _ in range(rounds):
                    before = cpu_seconds(pid)
                    streams, wall = await ws_streams(url, level, tokens)
                    cpu.append(cpu_seconds(pid) - before)
                    runs.append(streams)
                    walls.append(wall)
                summary = _summary(runs, walls, cpu, raw[level]["ttft"])
                summary["share_of_raw"] = round(summary["tokens_per_s"] / raw[level]["tokens_per_s"], 3)
                levels[str(level)] = summary
        report["flush"][f"{flush_ms:g}"] = levels
    return report


async def bench_vllm(model_dir: str, sessions: int, tokens: int, rounds: int, flush_ms: float) -> dict[str, Any]:
    """The demo model on vLLM CPU: Yap (`STREAM_FLUSH_MS=flush_ms`) against vLLM's own OpenAI server."""
    kv_gib, max_len = "2", 1024
    report: dict[str, Any] = {"sessions": sessions, "max_tokens": tokens, "model": Path(model_dir).name}
    vllm_args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--port", "{port}"]
    vllm_args += ["--max-model-len", str(max_len), "--max-num-seqs", str(sessions)]
    # the engine configuration Yap runs on CPU (eager: no torch.compile), so the servers differ, not the engines
    vllm_args += ["--served-model-name", "demo", "--enforce-eager"]
    yap_vllm = {
        "ENGINE": "vllm",
        "MODEL": model_dir,
        "SERVED_MODEL_NAME": "demo",
        "CHAT_MAX_LEN": str(max_len - tokens),
        "CHAT_MAX_OUT": str(tokens),
        "YAP_VLLM_MAX_NUM_SEQS": str(sessions),
        "VLLM_CPU_KVCACHE_SPACE": kv_gib,
        # vLLM's server samples with its defaults (the request sets only the temperature): so does Yap
        "CHAT_TOP_P": "1.0",
        "CHAT_TOP_K": "-1",
        "CHAT_REPETITION_PENALTY": "1.0",
    }
    targets: list[tuple[str, list[str], dict[str, str], str]] = [
        ("vllm_openai_server", vllm_args, {"VLLM_CPU_KVCACHE_SPACE": kv_gib}, "/health"),
        ("yap", YAP_SERVE, yap_env(flush_ms, sessions + 16, **yap_vllm), "/healthz"),
    ]
    for name, command, env, health_path in targets:
        port = free_port()
        async with running(command, port, env, health_path) as pid:
            base = f"http://127.0.0.1:{port}/v1"
            await sse_streams(base, "demo", 4, tokens, KEY)  # warm-up
            runs, walls, cpu = [], [], []
            for _ in range(rounds):
                before = cpu_seconds(pid)
                streams, wall = await sse_streams(base, "demo", sessions, tokens, KEY)
                cpu.append(cpu_seconds(pid) - before)
                runs.append(streams)
                walls.append(wall)
            report[name] = _summary(runs, walls, cpu)
    yap, theirs = report["yap"], report["vllm_openai_server"]
    report["yap_over_vllm_tokens_per_s"] = round(yap["tokens_per_s"] / max(theirs["tokens_per_s"], 1e-9), 2)
    report["yap_over_vllm_ttft_p50"] = round(yap["ttft_ms_p50"] / max(theirs["ttft_ms_p50"], 1e-9), 2)
    report["stream_flush_ms"] = flush_ms
    return report


async def bench_server(
    flush_settings: tuple[float, ...] = FLUSH_SETTINGS_MS,
    sessions: tuple[int, ...] = SESSIONS,
    tokens: int = 200,
    tokens_per_s: float = 2000,
    rounds: int = 3,
    vllm_model: str | None = None,
    vllm_sessions: int = 64,
    vllm_tokens: int = 128,
    vllm_flush_ms: float | None = None,
) -> dict[str, Any]:
    """The whole report: the FakeEngine part, then (with `vllm_model`) the vLLM comparison."""
    report: dict[str, Any] = {
        "tokens_per_reply": tokens,
        "engine_tokens_per_s_per_stream": tokens_per_s,
        "rounds": rounds,
        "load_average_before": list(os.getloadavg()),
    }
    if flush_settings and sessions:
        report["fake"] = await bench_fake(flush_settings, sessions, tokens, tokens_per_s, rounds)
    if vllm_model is not None:
        from yap_engines import EngineSettings

        flush_ms = EngineSettings.from_env().stream_flush_ms if vllm_flush_ms is None else vllm_flush_ms
        try:
            report["vllm"] = await bench_vllm(vllm_model, vllm_sessions, vllm_tokens, rounds, flush_ms)
        except RuntimeError as exc:  # a server that did not start: keep the FakeEngine part
            report["vllm"] = {"error": str(exc)}
    report["load_average_after"] = list(os.getloadavg())
    return report


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Tokens/s (as a share of the raw engine) and first-token latency against sessions, per flush setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (share, ttft) = plt.subplots(1, 2, figsize=(11, 4.2))
    fake = report.get("fake", {})
    for flush, levels in fake.get("flush", {}).items():
        xs = [int(k) for k in levels]
        share.plot(xs, [v["share_of_raw"] for v in levels.values()], marker="o", label=f"STREAM_FLUSH_MS={flush}")
        ttft.plot(xs, [v["ttft_ms_p50"] for v in levels.values()], marker="o", label=f"STREAM_FLUSH_MS={flush}")
    if fake.get("raw"):
        xs = [int(k) for k in fake["raw"]]
        ttft.plot(xs, [v["ttft_ms_p50"] for v in fake["raw"].values()], "k--", label="raw engine")
    vllm = report.get("vllm")
    if vllm:
        n = vllm["sessions"]
        for name, style in (("yap", "*"), ("vllm_openai_server", "X")):
            ttft.plot([n], [vllm[name]["ttft_ms_p50"]], style, markersize=12, label=f"demo model on vLLM: {name}")
    share.set(xscale="log", xlabel="sessions", ylabel="server tokens/s ÷ raw engine", title="FakeEngine throughput")
    ttft.set(xscale="log", yscale="log", xlabel="sessions", ylabel="first-token p50 (ms)", title="first token")
    share.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    share.legend(fontsize=7)
    ttft.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
