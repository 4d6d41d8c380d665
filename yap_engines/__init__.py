"""Yap's engine library: one small seam over vLLM, TensorRT-LLM, remote OpenAI-compatible servers and a fake.

Importing this package never imports torch, vllm, tensorrt_llm or transformers; adapters load
their backend when they are built (`load_engine("vllm", ...)`).
"""

from __future__ import annotations

from .adapters.fake import FakeEngine, FunctionEngine
from .errors import (
    BackendUnavailableError,
    ContextTooLongError,
    EngineDeadError,
    EngineError,
    GenerationError,
    InvalidRequestError,
    InvalidSamplingError,
    UnknownBackendError,
    UnsupportedFeature,
)
from .protocol import InferenceEngine
from .registry import BACKENDS, load_engine
from .settings import EngineSettings, SettingsError
from .types import ChatRequest, Delta, EngineHealth, FinishReason, Sampling, StructuredOutput, Usage, normalize_json

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "ChatRequest",
    "ContextTooLongError",
    "Delta",
    "EngineDeadError",
    "EngineError",
    "EngineHealth",
    "EngineSettings",
    "FakeEngine",
    "FinishReason",
    "FunctionEngine",
    "GenerationError",
    "InferenceEngine",
    "InvalidRequestError",
    "InvalidSamplingError",
    "Sampling",
    "SettingsError",
    "StructuredOutput",
    "UnknownBackendError",
    "UnsupportedFeature",
    "Usage",
    "load_engine",
    "normalize_json",
]
