"""Yap's vLLM plugin (`yap_engines.adapters.vllm_plugin`): registered where vLLM looks for it, and on an
AMX CPU it keeps an eager bfloat16 engine alive through a first request of a few tokens."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from yap_engines import ChatRequest, Sampling, load_engine
from yap_engines.adapters.vllm_plugin import request_amx
from yap_engines.dtype import cpu_flags


def test_the_plugin_is_registered_where_vllm_loads_general_plugins() -> None:
    plugins = {ep.name: ep for ep in entry_points(group="vllm.general_plugins")}
    assert plugins["yap_amx"].value == "yap_engines.adapters.vllm_plugin:request_amx"
    assert plugins["yap_amx"].load() is request_amx


@pytest.mark.vllm
@pytest.mark.skipif("amx_tile" not in cpu_flags(), reason="the crash it prevents needs an AMX CPU")
async def test_a_first_request_of_four_tokens_in_eager_bfloat16_gets_its_tokens(demo_model_dir: Path) -> None:
    # Without the plugin vLLM's worker died here of SIGILL (exit code -4) in its AMX attention kernel.
    pytest.importorskip("vllm", reason="vLLM is not installed (make install)")
    engine: Any = load_engine("vllm", model=str(demo_model_dir), dtype="bfloat16", vllm_enforce_eager=True)
    try:
        request = ChatRequest("four", [1, 2, 3, 4], Sampling(max_tokens=4, temperature=0.0))
        deltas = [d async for d in engine.generate(request)]
        assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens >= 1
    finally:
        await engine.aclose()
