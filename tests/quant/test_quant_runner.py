"""The runner driver and the progress display, without the quantization tools."""

from __future__ import annotations

import io
import sys
from pathlib import Path

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
