"""`STREAM_FLUSH_MS` reaches the engines' own coalescing as `stream_interval`
(`EngineSettings.stream_interval_tokens`)."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from trt_support import trt_settings

from yap_engines import ChatRequest, EngineSettings, Sampling


def test_the_vllm_engine_args_carry_the_stream_interval(demo_model_dir: Path) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed (make install)")
    from yap_engines.adapters.vllm import VllmEngine

    settings = EngineSettings(engine="vllm", model=str(demo_model_dir), stream_flush_ms=50)
    assert VllmEngine.engine_args(settings).stream_interval == 4
    assert VllmEngine.engine_args(settings.model_copy(update={"stream_flush_ms": 0})).stream_interval == 1


def test_the_tensorrt_pytorch_backend_gets_the_stream_interval(trt: ModuleType, demo_model_dir: Path) -> None:
    settings = trt_settings(demo_model_dir, stream_flush_ms=25)
    limits = trt.TrtLimits.resolve(settings)
    assert trt.llm_kwargs(settings, limits, engine_backend=False, prebuilt=False)["stream_interval"] == 2
    # a PyTorch-backend field: the TensorRT-engine backend refuses it (see the recorded API)
    assert "stream_interval" not in trt.llm_kwargs(settings, limits, engine_backend=True, prebuilt=False)


async def test_vllm_streams_its_deltas_every_stream_interval_tokens(vllm_engine: Any) -> None:
    interval = EngineSettings().stream_interval_tokens  # the fixture's engine is built with the default
    assert vllm_engine._engine.output_processor.stream_interval == interval
    request = ChatRequest(f"si-{uuid.uuid4().hex}", [1, 2, 3, 4], Sampling(max_tokens=24, temperature=0.0))
    sizes = [len(delta.token_ids) async for delta in vllm_engine.generate(request) if delta.token_ids]
    assert sizes[0] == 1  # the first token at once
    assert all(size >= interval for size in sizes[1:-1])
