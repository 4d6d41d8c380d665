"""The runner driver and the progress display, without the quantization tools."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

from quant.env import QuantEnv
from quant.errors import RunnerError
from quant.progress import Progress
from quant.runner import run_runner


def test_a_failing_runner_raises_with_its_log(tmp_path: Path) -> None:
    # This interpreter has no llm-compressor, so the runner fails while importing its tool.
    env = QuantEnv(Path(sys.executable).parent.parent, (), {})
    log = tmp_path / "build.log"
    job = {"log": str(log), "model": "unused"}
    with pytest.raises(RunnerError) as err:
        run_runner(env, "llmcompressor", [job], progress=Progress(io.StringIO()))
    assert str(err.value) == (
        f"llmcompressor runner failed: ModuleNotFoundError: No module named 'llmcompressor' (log: {log})"
    )
    assert err.value.log == str(log)
    assert "Traceback" in log.read_text()


def test_progress_prints_stages_and_closes_finished_bars() -> None:
    out = io.StringIO()
    progress = Progress(out)
    progress.event({"event": "stage", "stage": "calibrate", "total": 4}, "modelopt")
    progress.event({"event": "bar", "desc": "batches ", "n": 2.0, "total": 4}, "modelopt")
    assert set(progress._bars) == {"batches"}
    progress.event({"event": "bar", "desc": "batches", "n": 4, "total": 4, "closed": True}, "modelopt")
    assert progress._bars == {}
    progress.event({"event": "done", "stage": "calibrate", "seconds": 1.25}, "modelopt")
    with progress.stage("upload 3 files", total=3) as advance:
        advance(3)
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "yap quant: modelopt calibrate (4) ...",
        "yap quant: modelopt calibrate done in 1.2 s",
        "yap quant: upload 3 files ...",
    ]
    assert len(lines) == 4 and lines[3].startswith("yap quant: upload 3 files done in ")


@pytest.mark.quant
def test_each_report_is_handed_over_while_the_runner_still_works(
    quant_env: QuantEnv, demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`evaluate_many(on_report=...)` gets every report, by index, as its result arrives: a long quality run that
    is cut short keeps the rows it finished."""
    import subprocess

    from quant_support import make_settings

    import quant.runner
    from quant.evaluate import QualityReport, evaluate_many

    started: list[subprocess.Popen[str]] = []
    real_popen = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[str]:
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(quant.runner.subprocess, "Popen", popen)
    seen: list[tuple[int, QualityReport, bool]] = []
    base = str(demo_model_dir.resolve())
    reports = evaluate_many(
        [(demo_model_dir, base)] * 3,
        settings=make_settings(eval_tokens=128, eval_window=64),
        env=quant_env,
        on_report=lambda index, report: seen.append((index, report, started[-1].poll() is None)),
    )
    assert [index for index, _, _ in seen] == [0, 1, 2]
    handed = [report.model_dump(exclude={"evaluated_at"}) for _, report, _ in seen]
    assert handed == [report.model_dump(exclude={"evaluated_at"}) for report in reports]
    assert seen[0][2] and seen[1][2]  # the runner was still working on the later jobs
    assert all(report.top1_agreement == 1.0 for report in reports)
