"""The TensorRT-engine backend's `LLM` (upstream: `tensorrt_llm.llmapi.llm._TrtLLM`)."""

from ..llmapi.llm import _TrtLLM as LLM

__all__ = ["LLM"]
