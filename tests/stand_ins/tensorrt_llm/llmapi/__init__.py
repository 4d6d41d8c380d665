"""The LLM API: `LLM`, its configs, sampling and guided-decoding parameters, result types."""

from ..executor import CompletionOutput, RequestError, RequestOutput
from ..sampling_params import GuidedDecodingParams, SamplingParams
from .llm import LLM
from .llm_args import BuildConfig, KvCacheConfig, LlmArgs, TorchLlmArgs, TrtLlmArgs

__all__ = [
    "LLM",
    "BuildConfig",
    "CompletionOutput",
    "GuidedDecodingParams",
    "KvCacheConfig",
    "LlmArgs",
    "RequestError",
    "RequestOutput",
    "SamplingParams",
    "TorchLlmArgs",
    "TrtLlmArgs",
]
