"""Drive a runner: `python -m quant.runners.<tool> JOBS.json` in `.venv-quant`, events in, logs kept.

The plan and the metadata stay in this process; the runner gets a job file and answers with JSON-line
events on stdout (rendered by `Progress`) and a final result. Its stderr — the tools' own output —
goes to the build log. No secret is ever put on the runner's command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .env import QuantEnv
from .errors import RunnerError
from .progress import Progress

# The directory that holds the `quant` package: the runner imports `quant.runners.*` from it.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunnerOutput:
    """One job's result event, and the module that produced it."""

    result: dict[str, Any]
    module: str


def run_runner(
    env: QuantEnv,
    tool: str,
    jobs: list[dict[str, Any]],
    *,
    progress: Progress,
    on_result: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[RunnerOutput]:
    """Run `tool`'s runner once over `jobs` (the tool is imported once); each job logs to its `log` path.
    `on_result(index, result)` is called as each job's result arrives, before the later jobs finish.

    Raises `RunnerError` naming the failed job's log and its last lines.
    """
    module = f"quant.runners.{tool}"
    with tempfile.TemporaryDirectory(prefix="yap-quant-job-") as tmp:
        job_path = Path(tmp) / "jobs.json"
        job_path.write_text(json.dumps({"jobs": jobs}, indent=2))
        argv = (str(env.python), "-m", module, str(job_path))
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), child_env.get("PYTHONPATH")]))
        child_env["PYTHONUNBUFFERED"] = "1"
        results: dict[int, dict[str, Any]] = {}
        error: dict[str, Any] | None = None
        label = f"{tool} [1/{len(jobs)}]" if len(jobs) > 1 else tool
        with open(jobs[0]["log"], "a") as first_log:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=first_log, text=True, env=child_env)
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    first_log.write(line)
                    continue
                kind = event.pop("event", None)
                if kind == "result":
                    index = int(event.pop("index"))
                    results[index] = event
                    if on_result is not None:
                        on_result(index, event)
                    label = f"{tool} [{len(results) + 1}/{len(jobs)}]" if len(jobs) > 1 else tool
                elif kind == "error":
                    error = event
                else:
                    progress.event({"event": kind, **event}, label)
            code = proc.wait()
        progress.close()
    if error is not None:
        log = jobs[int(error.get("index", 0))]["log"]
        raise RunnerError(f"{tool} runner failed: {error['type']}: {error['message']}", log)
    if code != 0 or len(results) != len(jobs):
        log = jobs[len(results) if len(results) < len(jobs) else 0]["log"]
        raise RunnerError(f"{tool} runner exited with status {code}: {_tail(Path(log))}", log)
    return [RunnerOutput(results[i], module) for i in range(len(jobs))]


def _tail(log: Path, lines: int = 5) -> str:
    try:
        with open(log) as handle:
            return " | ".join(line.rstrip() for line in deque(handle, maxlen=lines))
    except OSError:
        return "(no log)"
