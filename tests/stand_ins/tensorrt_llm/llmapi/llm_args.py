"""The `LlmArgs` field names (what `LLM(**kwargs)` accepts), `KvCacheConfig` and `BuildConfig` (1.2.x).

The field lists are the real `TorchLlmArgs` / `TrtLlmArgs` fields; the values the stand-in does not
act on are only stored.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

_COMMON_FIELDS = (
    "model",
    "tokenizer",
    "tokenizer_mode",
    "skip_tokenizer_init",
    "trust_remote_code",
    "tensor_parallel_size",
    "dtype",
    "revision",
    "tokenizer_revision",
    "pipeline_parallel_size",
    "context_parallel_size",
    "gpus_per_node",
    "moe_cluster_parallel_size",
    "moe_tensor_parallel_size",
    "moe_expert_parallel_size",
    "enable_attention_dp",
    "enable_lm_head_tp_in_adp",
    "cp_config",
    "load_format",
    "fail_fast_on_attention_window_too_large",
    "enable_lora",
    "lora_config",
    "kv_cache_config",
    "enable_chunked_prefill",
    "guided_decoding_backend",
    "batched_logits_processor",
    "iter_stats_max_iterations",
    "request_stats_max_iterations",
    "peft_cache_config",
    "scheduler_config",
    "cache_transceiver_config",
    "sparse_attention_config",
    "speculative_config",
    "max_batch_size",
    "max_input_len",
    "max_seq_len",
    "max_beam_width",
    "max_num_tokens",
    "gather_generation_logits",
    "num_postprocess_workers",
    "postprocess_tokenizer_dir",
    "reasoning_parser",
    "decoding_config",
    "mpi_session",
    "backend",
    "return_perf_metrics",
    "orchestrator_type",
)

_PYTORCH_ONLY_FIELDS = (
    "build_config",
    "garbage_collection_gen0_threshold",
    "cuda_graph_config",
    "attention_dp_config",
    "disable_overlap_scheduler",
    "moe_config",
    "attn_backend",
    "sampler_type",
    "enable_iter_perf_stats",
    "enable_iter_req_stats",
    "print_iter_log",
    "perf_metrics_max_requests",
    "batch_wait_timeout_ms",
    "batch_wait_timeout_iters",
    "batch_wait_max_tokens_ratio",
    "torch_compile_config",
    "enable_autotuner",
    "enable_layerwise_nvtx_marker",
    "enable_min_latency",
    "stream_interval",
    "force_dynamic_quantization",
    "allreduce_strategy",
    "checkpoint_loader",
    "checkpoint_format",
    "kv_connector_config",
    "mm_encoder_only",
)

_TRT_ENGINE_ONLY_FIELDS = (
    "enable_tqdm",
    "workspace",
    "enable_build_cache",
    "extended_runtime_perf_knob_config",
    "calib_config",
    "quant_config",
    "embedding_parallel_mode",
    "fast_build",
    "build_config",
    "enable_prompt_adapter",
    "max_prompt_adapter_token",
    "batching_type",
    "normalize_log_probs",
)

_DEFAULTS: dict[str, Any] = {
    "tokenizer_mode": "auto",
    "skip_tokenizer_init": False,
    "trust_remote_code": False,
    "tensor_parallel_size": 1,
    "dtype": "auto",
    "pipeline_parallel_size": 1,
    "context_parallel_size": 1,
    "enable_chunked_prefill": False,
    "max_num_tokens": 8192,
    "stream_interval": 1,
}


class _LlmArgsBase:
    """Holds the resolved constructor arguments (`llm.args`); `model_fields` names every accepted keyword."""

    model_fields: ClassVar[dict[str, None]]

    def __init__(self, **kwargs: Any) -> None:
        for name in self.model_fields:
            setattr(self, name, kwargs.get(name, _DEFAULTS.get(name)))
        if self.kv_cache_config is None:
            self.kv_cache_config = KvCacheConfig()
        if self.max_input_len is None:
            self.max_input_len = 1024  # as the real `set_default_max_input_len` validator does

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> _LlmArgsBase:
        return cls(**kwargs)


class TorchLlmArgs(_LlmArgsBase):
    model_fields: ClassVar[dict[str, None]] = dict.fromkeys((*_COMMON_FIELDS, *_PYTORCH_ONLY_FIELDS))


class TrtLlmArgs(_LlmArgsBase):
    model_fields: ClassVar[dict[str, None]] = dict.fromkeys((*_COMMON_FIELDS, *_TRT_ENGINE_ONLY_FIELDS))


LlmArgs = TorchLlmArgs


class KvCacheConfig(BaseModel):
    """KV-cache settings; unknown fields are refused, as the real (strict) pydantic model does."""

    model_config = ConfigDict(extra="forbid")

    enable_block_reuse: bool = True
    max_tokens: int | None = None
    max_attention_window: list[int] | None = None
    sink_token_length: int | None = None
    free_gpu_memory_fraction: float | None = None
    host_cache_size: int | None = None
    onboard_blocks: bool = True
    cross_kv_cache_fraction: float | None = None
    secondary_offload_min_priority: int | None = None
    event_buffer_max_size: int = 0
    attention_dp_events_gather_period_ms: int = 5
    enable_partial_reuse: bool = True
    copy_on_partial_reuse: bool = True
    use_uvm: bool = False
    max_gpu_total_bytes: int = 0
    dtype: str = "auto"
    mamba_ssm_cache_dtype: str = "auto"
    tokens_per_block: int = 32

    @field_validator("free_gpu_memory_fraction")
    @classmethod
    def _check_fraction(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value <= 1:
            raise ValueError("kv_cache_config.free_gpu_memory_fraction must be a float between 0 and 1")
        return value


class BuildConfig(BaseModel):
    """What a TensorRT engine was built with (the `build_config` of an engine dir's config.json)."""

    model_config = ConfigDict(extra="ignore")

    max_input_len: int = 1024
    max_seq_len: int | None = None
    opt_batch_size: int = 8
    max_batch_size: int = 2048
    max_beam_width: int = 1
    max_num_tokens: int = 8192
    opt_num_tokens: int | None = None
    max_prompt_embedding_table_size: int = 0
    gather_context_logits: bool = False
    gather_generation_logits: bool = False
    strongly_typed: bool = True
    max_draft_len: int = 0
    use_refit: bool = False
    weight_sparsity: bool = False
    weight_streaming: bool = False
    use_strip_plan: bool = False
    max_encoder_input_len: int = 1024
    dry_run: bool = False
    monitor_memory: bool = False
    use_mrope: bool = False
