"""`yap infer`, `yap scenario run FILE`, `yap server start|status|stop`: the chat-completions harness.

`--target` is an engine spec: `openai:http://host:port` (any OpenAI-compatible server, through the
remote engine; the key from `--api-key` or `OPENAI_API_KEY`) or an in-process engine name (`fake`,
`vllm`, `trt`) with `--model`. Results are JSON on stdout, one object per line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

DEFAULT_RUNS_DIR = "runs"


def _runs_dir(args: argparse.Namespace) -> Path:
    return Path(args.runs_dir or os.environ.get("YAP_RUNS_DIR") or DEFAULT_RUNS_DIR)


def _target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="openai:http://host:port, or an engine name (fake, vllm, trt)")
    parser.add_argument("--model", help="model: the served name (openai:) or HF id/path (in-process)")
    parser.add_argument("--api-key", help="API key for openai: targets (env OPENAI_API_KEY)")
    parser.add_argument("--timeout", type=float, help="seconds allowed per request (also the read timeout)")
    parser.add_argument(
        "--runs-dir", help=f"where runs and the server manifest live (env YAP_RUNS_DIR, default {DEFAULT_RUNS_DIR})"
    )
    parser.add_argument("--model-kind", choices=["thinking", "instruct"], default="instruct", help="sampling defaults")


def register(commands: Any) -> None:
    """Register `infer`, `scenario` and `server` on the `yap` command."""
    infer = commands.add_parser("infer", help="one prompt against a target -> one JSON result")
    _target_flags(infer)
    infer.add_argument("--system", help="system prompt")
    infer.add_argument("--context", help="context placed before the prompt in the user turn")
    infer.add_argument("--prompt", required=True, help="the user prompt")
    infer.add_argument("--test-id", help="id in the result (default: generated)")
    infer.add_argument(
        "--run-id", help="run folder for the artifacts (default: the managed server's run id, else generated)"
    )
    for name, kind in (
        ("temperature", float), ("top-p", float), ("top-k", int), ("min-p", float), ("max-tokens", int),
        ("repetition-penalty", float), ("presence-penalty", float), ("frequency-penalty", float), ("seed", int),
    ):  # fmt: skip
        infer.add_argument(f"--{name}", type=kind, help="sampling override")
    infer.add_argument("--stop", action="append", help="stop string (repeatable)")
    infer.set_defaults(run=_infer)

    scenario = commands.add_parser("scenario", help="scenario files")
    scenario_commands = scenario.add_subparsers(dest="scenario_command", required=True)
    run = scenario_commands.add_parser("run", help="run every test of a YAML/JSON scenario, with artifacts")
    run.add_argument("file", type=Path, help="scenario file (.yaml, .yml or .json)")
    _target_flags(run)
    run.add_argument("--run-id", help="run id (default: the file's run_id, else generated)")
    run.set_defaults(run=_scenario_run)

    server = commands.add_parser("server", help="a model server for the harness, tracked by a manifest")
    server_commands = server.add_subparsers(dest="server_command", required=True)
    start = server_commands.add_parser("start", help="launch a server command and wait until it is healthy")
    start.add_argument("--port", type=int, required=True, help="port the command listens on ({port} in it is replaced)")
    start.add_argument("--host", default="127.0.0.1", help="host to probe")
    start.add_argument("--health-path", help="health endpoint (default: try /health, then /healthz)")
    start.add_argument("--deadline", type=float, default=300.0, help="seconds to wait for health")
    start.add_argument("--run-id", help="run id (default: generated)")
    start.add_argument("--runs-dir", help=f"manifest and log location (env YAP_RUNS_DIR, default {DEFAULT_RUNS_DIR})")
    start.add_argument("server_command_line", nargs=argparse.REMAINDER, help="-- COMMAND... (default: yap serve)")
    start.set_defaults(run=_server_start)
    for name, handler, text in (
        ("status", _server_status, "ready | starting | down"),
        ("stop", _server_stop, "stop it"),
    ):
        sub = server_commands.add_parser(name, help=text)
        sub.add_argument("--runs-dir", help=f"manifest location (env YAP_RUNS_DIR, default {DEFAULT_RUNS_DIR})")
        sub.set_defaults(run=handler)


def _print(value: dict[str, Any]) -> None:
    print(json.dumps(value, ensure_ascii=False), flush=True)


def _bookmark(runs_dir: Path) -> Any:
    from yap_engines.harness.run import Bookmark

    from .server_supervisor import server_status

    health, manifest = server_status(runs_dir)
    if manifest is None or health == "down":
        return Bookmark()
    return Bookmark(manifest.run_id, manifest.log_file)


def _open(args: argparse.Namespace) -> Any:
    from yap_engines.harness.run import open_target

    key = args.api_key or os.environ.get("OPENAI_API_KEY")
    return open_target(args.target, model=args.model, api_key=key, read_timeout_s=args.timeout)


def _infer(args: argparse.Namespace) -> int:
    import uuid

    from yap_engines.harness.run import infer

    keys = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "repetition_penalty", "presence_penalty",
            "frequency_penalty", "seed", "stop")  # fmt: skip
    overrides = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    runs_dir = _runs_dir(args)

    async def run() -> dict[str, Any]:
        target = _open(args)
        bookmark = _bookmark(runs_dir)
        run_id = args.run_id or bookmark.run_id or f"run-{uuid.uuid4().hex[:12]}"
        try:
            return await infer(
                target,
                prompt=args.prompt,
                system=args.system,
                context=args.context,
                overrides=overrides,
                kind=args.model_kind,
                timeout_s=args.timeout,
                test_id=args.test_id,
                bookmark=bookmark,
                artifacts_dir=runs_dir / run_id / "inference",
            )
        finally:
            await target.aclose()

    record = asyncio.run(run())
    _print(record)
    return 0 if record["status"] == "ok" else 1


def _scenario_run(args: argparse.Namespace) -> int:
    from yap_engines.harness.scenario import ScenarioError, load_scenario, run_scenario

    try:
        scenario = load_scenario(args.file)
    except (ScenarioError, OSError, ValueError) as exc:
        print(f"yap: {args.file}: {exc}", file=sys.stderr)
        return 2
    if args.timeout is not None:
        from dataclasses import replace

        scenario = replace(
            scenario, tests=tuple(replace(t, timeout_s=t.timeout_s or args.timeout) for t in scenario.tests)
        )
    runs_dir = _runs_dir(args)

    async def run() -> dict[str, Any]:
        target = _open(args)
        try:
            return await run_scenario(
                target, scenario, runs_dir, run_id=args.run_id, bookmark=_bookmark(runs_dir), emit=_print
            )
        finally:
            await target.aclose()

    summary = asyncio.run(run())
    return 0 if set(summary["by_status"]) <= {"ok"} else 1


def _server_start(args: argparse.Namespace) -> int:
    from .server_supervisor import start_server

    command = list(args.server_command_line)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        command = [sys.executable, "-m", "yap_cli", "serve", "--port", "{port}"]
    try:
        manifest = start_server(
            command,
            port=args.port,
            runs_dir=_runs_dir(args),
            host=args.host,
            health_path=args.health_path,
            deadline_s=args.deadline,
            run_id=args.run_id,
        )
    except RuntimeError as exc:
        print(f"yap: {exc}", file=sys.stderr)
        return 1
    _print(manifest.printed())
    if manifest.health != "ready":
        print(f"yap: `{shlex.join(command)}` is {manifest.health}; see {manifest.log_file}", file=sys.stderr)
        return 1
    return 0


def _server_status(args: argparse.Namespace) -> int:
    from .server_supervisor import server_status

    health, _ = server_status(_runs_dir(args))
    print(health, flush=True)
    return 0 if health == "ready" else 1


def _server_stop(args: argparse.Namespace) -> int:
    from .server_supervisor import stop_server

    try:
        manifest = stop_server(_runs_dir(args))
    except RuntimeError as exc:
        print(f"yap: {exc}", file=sys.stderr)
        return 1
    if manifest is None:
        print("yap: no server manifest to stop", file=sys.stderr)
        return 1
    _print({"run_id": manifest.run_id, "health": manifest.health, "port": manifest.port})
    return 0
