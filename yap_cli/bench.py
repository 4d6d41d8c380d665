"""`yap bench stream|server|telemetry|tool`: benchmarks that print numbers (JSON on stdout).

`register` adds the `bench` group and returns its subparsers, so a benchmark kept in its own module
(`yap bench soak`) registers there with its own `register(benches)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from yap_engines.settings import EngineSettings

from ._common import given, tool_model


def register(commands: Any) -> Any:
    """Add `yap bench` with its built-in benchmarks; return the `bench` subparsers for more."""
    bench = commands.add_parser("bench", help="benchmarks that print numbers")
    benches = bench.add_subparsers(dest="bench_command", required=True)
    _register_stream(benches)
    _register_server(benches)
    _register_telemetry(benches)
    _register_tool(benches)
    return benches


def _register_stream(benches: Any) -> None:
    stream = benches.add_parser("stream", help="engine start-up, first-token latency, tokens/s (1 stream)")
    stream.add_argument("--engine", help="engine name (env ENGINE)")
    stream.add_argument("--model", help="model (env MODEL); unset = the embedded default; `demo` = the tiny model")
    stream.add_argument("--requests", type=int, default=10, help="sequential requests to time")
    stream.add_argument("--max-tokens", type=int, default=128, help="tokens per request")
    stream.set_defaults(run=_bench_stream)


def _register_server(benches: Any) -> None:
    server = benches.add_parser(
        "server", help="the server's added latency, throughput and CPU per token over the engine, per STREAM_FLUSH_MS"
    )
    server.add_argument("--concurrency", type=int, nargs="*", default=[1, 16, 64, 256], help="sessions at once")
    server.add_argument(
        "--flush-ms", type=float, nargs="*", default=[0, 10, 25, 50], help="STREAM_FLUSH_MS settings to compare"
    )
    server.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    server.add_argument("--rate", type=float, default=2000, help="fake engine tokens/s per stream")
    server.add_argument("--rounds", type=int, default=3, help="repeats per configuration (medians reported)")
    server.add_argument(
        "--vllm-model", help="also compare Yap with vLLM's own OpenAI server on this model (`demo` = the demo model)"
    )
    server.add_argument("--vllm-sessions", type=int, default=64, help="concurrent streams for --vllm-model")
    server.add_argument("--vllm-flush-ms", type=float, help="Yap's STREAM_FLUSH_MS there (default: the env's)")
    server.add_argument("--json", type=Path, help="also write the report here")
    server.add_argument("--png", type=Path, help="plot tokens/s and first-token latency against sessions here")
    server.set_defaults(run=_bench_server)


def _register_telemetry(benches: Any) -> None:
    telemetry = benches.add_parser("telemetry", help="server tokens/s with telemetry off vs on")
    telemetry.add_argument("--concurrency", type=int, default=16, help="sessions at once")
    telemetry.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    telemetry.add_argument("--rounds", type=int, default=5, help="alternating off/on runs")
    telemetry.set_defaults(run=_bench_telemetry)


def _register_tool(benches: Any) -> None:
    tool = benches.add_parser("tool", help="tool classifier latency, with and without micro-batching")
    tool.add_argument("--model", help="classifier (env TOOL_MODEL; default: the demo classifier)")
    tool.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="requests at once")
    tool.set_defaults(run=_bench_tool)


def _bench_stream(args: argparse.Namespace) -> int:
    from yap_engines.demo import build_offline_model

    from .bench_engine import bench_stream

    settings = EngineSettings.from_env(**given(engine=args.engine, model=args.model))
    if settings.engine in ("vllm", "trt"):
        build_offline_model(settings)  # the embedded default, or MODEL=demo
    result = asyncio.run(bench_stream(settings, requests=args.requests, max_tokens=args.max_tokens))
    print(json.dumps(result.as_dict()))
    return 0


def _bench_server(args: argparse.Namespace) -> int:
    from .bench_server import bench_server, plot_report

    model = args.vllm_model
    if model == "demo":
        from yap_engines.demo import build_demo_chat

        model = str(build_demo_chat(EngineSettings.from_env().demo_model_dir))
    report = asyncio.run(
        bench_server(
            tuple(args.flush_ms),
            tuple(args.concurrency),
            tokens=args.tokens,
            tokens_per_s=args.rate,
            rounds=args.rounds,
            vllm_model=model,
            vllm_sessions=args.vllm_sessions,
            vllm_flush_ms=args.vllm_flush_ms,
        )
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    if args.png is not None:
        plot_report(report, args.png)
    return 0


def _bench_telemetry(args: argparse.Namespace) -> int:
    from .bench_telemetry import bench_telemetry

    report = asyncio.run(bench_telemetry(concurrency=args.concurrency, tokens=args.tokens, rounds=args.rounds))
    print(json.dumps(report, indent=2))
    return 0


def _bench_tool(args: argparse.Namespace) -> int:
    from yap_engines.tool import ToolSettings

    from .bench_engine import bench_tool

    model = tool_model(ToolSettings.from_env(**given(tool_model=args.model)), EngineSettings.from_env().engines_dir)
    print(json.dumps(asyncio.run(bench_tool(model, concurrencies=tuple(args.concurrency))), indent=2))
    return 0
