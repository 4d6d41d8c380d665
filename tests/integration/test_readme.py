"""The README's notebook example, run as a notebook runs it (top-level await) in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

RUNNER = """
import ast, asyncio, sys
source = open(sys.argv[1]).read()
code = compile(source, "README example", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
result = eval(code, {"__name__": "notebook"})
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""


def notebook_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## In a notebook", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README has no notebook example"
    return match.group(1)


def test_the_readme_notebook_example_runs_as_written(tmp_path: Path, demo_model_dir: Path) -> None:
    example = tmp_path / "example.py"
    example.write_text(notebook_example())
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, str(example)], cwd=REPO, env=env, capture_output=True, text=True, timeout=400
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "finish: " in out.stdout
    assert "Usage(prompt_tokens=" in out.stdout
