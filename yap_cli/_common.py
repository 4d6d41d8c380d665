"""Helpers the `yap` command modules share: flag overrides, progress lines, the tool model to load."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from yap_engines.tool import ToolSettings


def given(**values: object) -> dict[str, object]:
    """The flags that were given (not None): settings overrides, so flags win over the environment."""
    return {key: value for key, value in values.items() if value is not None}


def progress(line: str) -> None:
    """A progress line on stderr (stdout stays for results)."""
    print(f"yap: {line}", file=sys.stderr, flush=True)


def tool_model(settings: ToolSettings, engines_dir: Path, *, announce: bool = False) -> str:
    """The tool classifier to load, by `ToolSettings.resolved_model` (TOOL_MODEL, else the demo classifier
    under `engines_dir`); the demo classifier is built first when TOOL_MODEL is unset (cached: only once).
    `announce` says so on stderr."""
    model = settings.resolved_model(engines_dir)
    if settings.tool_model is None:
        from yap_engines.demo import build_demo_tool

        if announce:
            print(f"yap: no TOOL_MODEL set, using the demo classifier in {model}", file=sys.stderr)
        build_demo_tool(Path(model))
    return model
