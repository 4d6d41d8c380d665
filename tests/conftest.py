"""Shared fixtures: the demo model (built once), its real tokenizer, and one vLLM engine per test session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from yap_engines.settings import EngineSettings

REPO = Path(__file__).resolve().parents[1]

# vLLM's CPU build sizes its KV cache from this (its default of 92% of RAM fails on small machines).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    from yap_engines.demo import build_demo_chat

    return build_demo_chat(EngineSettings(engines_dir=REPO / "engines").demo_model_dir)


@pytest.fixture(scope="session")
def demo_tokenizer(demo_model_dir: Path) -> Any:
    from yap_engines.chat import load_tokenizer

    return load_tokenizer(str(demo_model_dir))


@pytest.fixture(scope="session")
async def vllm_engine(demo_model_dir: Path) -> AsyncIterator[Any]:
    """One real vLLM engine (CPU build here) on the demo model, shared by every test that needs it."""
    pytest.importorskip("vllm", reason="vLLM is not installed (make install)")
    from yap_engines import load_engine

    engine = load_engine("vllm", model=str(demo_model_dir), vllm_max_num_seqs=8)
    try:
        yield engine
    finally:
        await engine.aclose()
