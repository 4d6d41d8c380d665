"""`yap demo build`: the offline models (the embedded default, the tiny test model, the demo tool classifier)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from yap_engines.settings import EngineSettings

from ._common import progress


def register(commands: Any) -> None:
    """Add `yap demo build` to the `yap` subparsers."""
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
        smollm2 = build_smollm2(settings.default_model_dir, overwrite=args.force, progress=progress)
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
