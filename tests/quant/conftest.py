"""Quantization fixtures: the real `.venv-quant` (created once, through `yap quant env`'s code path), a
session artifact store, and builds of the demo model shared by the tests that inspect them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from quant_support import CAPITAL, DEMO_BUILDS, QUANT_VENV, REPO, SMOL_BUILDS, demo_request, smol_request

from quant.build import BuildResult, build_many
from quant.env import QuantEnv, ensure_env
from quant.evaluate import QualityReport, evaluate_floor, evaluate_many, table
from quant.progress import Progress

# Each SmolLM2 quality report as soon as it is measured (one JSON object a line), so a run cut short keeps its rows.
SMOL_ROWS = REPO / "runs" / "quant-quality.jsonl"


def _keep_row(name: str, report: QualityReport) -> None:
    SMOL_ROWS.parent.mkdir(exist_ok=True)
    with SMOL_ROWS.open("a") as rows:
        rows.write(json.dumps({"name": name, **report.model_dump(mode="json")}) + "\n")
    print(f"  {name}: {report.row()}", flush=True)


# The SmolLM2 suite's first test sets up every build and every evaluation (10 minutes on a quiet 2-core
# machine, hours on a loaded one): the project's 300 s per-test timeout would cut it short, so its tests get this.
QUALITY_TIMEOUT_S = 4 * 3600


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quant: runs the real quantization tools in .venv-quant (slow; -m quant)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("quant_quality") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(QUALITY_TIMEOUT_S))


@pytest.fixture(scope="session")
def quant_env() -> QuantEnv:
    """`.venv-quant` with llm-compressor and ModelOpt: installed on first use (about a minute), then reused."""
    started = time.perf_counter()
    env = ensure_env(QUANT_VENV, log=lambda line: print(line, flush=True))
    print(f"quant env ready in {time.perf_counter() - started:.1f} s")
    return env


@pytest.fixture(scope="session")
def quant_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh artifact store for this session (so every build here really runs once)."""
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="session")
def demo_builds(quant_env: QuantEnv, quant_store: Path, demo_model_dir: Path) -> dict[str, BuildResult]:
    """Every variant in `DEMO_BUILDS`, built once in one `build_many` call (one runner process per tool)."""
    started = time.perf_counter()
    requests = [demo_request(name, quant_store, demo_model_dir) for name in DEMO_BUILDS]
    results = build_many(requests, progress=Progress(), env=quant_env)
    print(f"demo builds done in {time.perf_counter() - started:.1f} s")
    return dict(zip(DEMO_BUILDS, results, strict=True))


@pytest.fixture(scope="session")
def smol_builds(quant_env: QuantEnv, quant_store: Path, smollm2_dir: Path) -> dict[str, BuildResult]:
    """Every variant in `SMOL_BUILDS` built from SmolLM2-135M-Instruct (the `smollm2_dir` fixture), once per session."""
    started = time.perf_counter()
    requests = [smol_request(name, quant_store, smollm2_dir) for name in SMOL_BUILDS]
    results = build_many(requests, progress=Progress(), env=quant_env)
    print(f"SmolLM2 builds done in {time.perf_counter() - started:.1f} s")
    return dict(zip(SMOL_BUILDS, results, strict=True))


@pytest.fixture(scope="session")
def smol_reports(
    smol_builds: dict[str, BuildResult], quant_env: QuantEnv, quant_store: Path, smollm2_dir: Path
) -> dict[str, QualityReport]:
    """The quality report of every SmolLM2 build against the bf16 base, in one runner process; each 4-bit build
    also answers "What is the capital of France?" greedily."""
    started = time.perf_counter()
    settings, _ = smol_request("w4a16", quant_store, smollm2_dir)
    names = list(SMOL_BUILDS)
    paths = [smol_builds[name].path for name in names]
    assert all(paths)
    SMOL_ROWS.unlink(missing_ok=True)
    reports = evaluate_many(
        [(path, None) for path in paths if path is not None],
        settings=settings,
        env=quant_env,
        prompts=(CAPITAL,),
        on_report=lambda index, report: _keep_row(names[index], report),
    )
    print(f"SmolLM2 evaluations done in {time.perf_counter() - started:.1f} s")
    return dict(zip(names, reports, strict=True))


@pytest.fixture(scope="session")
def smol_floor(quant_env: QuantEnv, quant_store: Path, smollm2_dir: Path) -> QualityReport:
    """The evaluation floor: SmolLM2's bf16 weights computing in bf16 against float32 compute."""
    settings, _ = smol_request("w4a16", quant_store, smollm2_dir)
    report = evaluate_floor(smollm2_dir, settings=settings, env=quant_env)
    _keep_row("eval_floor", report)
    return report


@pytest.fixture(scope="session")
def smol_table(smol_reports: dict[str, QualityReport], smol_floor: QualityReport) -> list[str]:
    """The quality table of this session (markdown), printed and written to runs/quant-quality.md."""
    lines = table({"eval_floor": smol_floor, **smol_reports})
    out = REPO / "runs" / "quant-quality.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return lines
