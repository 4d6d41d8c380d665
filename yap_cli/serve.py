"""`yap serve`: run the server (uvicorn) on the engine, model and tool classifier the settings name."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from yap_engines.registry import engine_class
from yap_engines.settings import EngineSettings
from yap_server.settings import ServerSettings

from ._common import given, progress, tool_model


def register(commands: Any) -> None:
    """Add `yap serve` to the `yap` subparsers."""
    serve = commands.add_parser("serve", help="run the server (uvicorn)")
    serve.add_argument("--engine", help="fake | vllm | trt | openai (env ENGINE)")
    picked = serve.add_mutually_exclusive_group()
    picked.add_argument("--trt", action="store_true", help="same as --engine trt (the seed's flag)")
    picked.add_argument("--vllm", action="store_true", help="same as --engine vllm (the seed's flag)")
    serve.add_argument(
        "--model",
        help="HF id or local path (env MODEL); unset = the embedded default (SmolLM2-135M-Instruct); "
        "`demo` = the tiny random-weight test model",
    )
    serve.add_argument("--host", help="interface to bind (env YAP_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (env YAP_PORT, default 8000)")
    serve.add_argument(
        "--quant", help="quantize on deploy: 4bit|8bit|auto|... (env QUANT); builds into engines/ or reuses a build"
    )
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    from yap_engines.demo import build_offline_model
    from yap_engines.tool import ToolSettings
    from yap_server.app import create_app
    from yap_server.seed_settings import SeedSettings

    SeedSettings.from_env()  # a seed variable Yap cannot honour stops here, named
    server = ServerSettings.from_env(**given(host=args.host, port=args.port))
    flagged = "trt" if args.trt else "vllm" if args.vllm else None
    if flagged and args.engine and args.engine != flagged:
        raise SystemExit(f"yap serve: --{flagged} and --engine {args.engine} disagree; give one")
    engine = EngineSettings.from_env(**given(engine=flagged or args.engine, model=args.model))
    if server.chat_deployed:
        engine_class(engine.engine)  # a missing backend stops here with its install hint, not a lifespan traceback
    tool = ToolSettings.from_env()
    if server.chat_deployed and engine.engine in ("vllm", "trt"):
        if engine.model is None:
            print(
                f"yap: no MODEL set, serving the demo model SmolLM2-135M-Instruct (the embedded default) from "
                f"{engine.default_model_dir}; MODEL=demo serves the tiny test model",
                file=sys.stderr,
            )
        build_offline_model(engine, progress=progress)  # the embedded default, or MODEL=demo; cached
        from quant.deploy import DeployError, deploy_model, requested_quant

        try:  # QUANT=...: plan for this GPU (or the CPU), build or reuse, then serve the build
            deployed = deploy_model(engine.resolved_model(), engine.engine, requested_quant(args.quant), log=progress)
        except DeployError as exc:
            print(f"yap: {exc}", file=sys.stderr)
            return 1
        if deployed.plan is not None:
            engine = engine.model_copy(update={"model": deployed.model})
    if server.tool_deployed:  # without TOOL_MODEL, the demo classifier is built here (once)
        tool_model(tool, engine.engines_dir, announce=True)
    app = create_app(server, engine_settings=engine, tool_settings=tool)
    from yap_server.serving import uvicorn_server

    # running turns end `cancelled` (reason `shutdown`) on SIGTERM/Ctrl-C
    uvicorn_server(app, host=server.host, port=server.port, log_level=server.log_level).run()
    return 0
