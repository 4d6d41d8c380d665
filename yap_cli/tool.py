"""`yap tool classify|eval`: the tool classifier from the command line (TOOL_MODEL, else the demo classifier)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from yap_engines.settings import EngineSettings

from ._common import given, tool_model


def register(commands: Any) -> None:
    """Add `yap tool classify` and `yap tool eval` to the `yap` subparsers."""
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


def _tool_classify(args: argparse.Namespace) -> int:
    from yap_engines.tool import ToolClassifier, ToolSettings

    settings = ToolSettings.from_env(**given(tool_model=args.model))
    model = tool_model(settings, EngineSettings.from_env().engines_dir)

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
    overrides = given(tool_model=args.model, tool_threshold=args.threshold, tool_history_tokens=args.history_tokens)
    settings = ToolSettings.from_env(**overrides, tool_timeout_s=60.0)
    model = tool_model(settings, EngineSettings.from_env().engines_dir)

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
