"""Quantization fixtures: the real `.venv-quant` (created once, through `yap quant env`'s code path), a
session artifact store, and builds of the demo model shared by the tests that inspect them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from quant_support import DEMO_BUILDS, QUANT_VENV, demo_request

from quant.build import BuildResult, build_many
from quant.env import QuantEnv, ensure_env
from quant.progress import Progress


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quant: runs the real quantization tools in .venv-quant (slow; -m quant)")


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
