"""Engine settings, read once from the environment (then `.env`, then defaults) into a frozen object.

Every variable is listed once below with what it does. The seeds' names (`MODEL`, `ENGINE`,
`CHAT_MAX_LEN`, `TRT_BATCH_SIZE`, ...) are accepted as they are; backend knobs are namespaced
`YAP_VLLM_*` / `YAP_TRT_*`, with the seed system's names as aliases (`ENFORCE_EAGER`, `TENSOR_PARALLEL`,
`TRT_DTYPE`, `CHAT_MODEL`, ...); where both are set, Yap's name wins. Build it with
`EngineSettings.from_env(**overrides)`; a bad value raises `SettingsError` naming the variable.
Tests and notebooks pass keyword arguments by field name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The built artifacts under `YAP_ENGINES_DIR`, named once (the demo builders write them, settings find them).
DEMO_CHAT_NAME = "demo-chat"  # the tiny random-weight test model
SMOLLM2_NAME = "smollm2-135m-instruct"  # the embedded default model
DEMO_TOOL_NAME = "demo-tool"  # the demo tool classifier
DEMO_MODEL_ALIAS = "demo"  # `MODEL=demo` names the tiny test model

ENGINE_NAMES = ("fake", "vllm", "trt", "openai")


MODEL_ENV_NAMES = (
    "MODEL",
    "YAP_MODEL",
    "TRT_ENGINE_DIR",
    "TRT_CHECKPOINT_DIR",
    "AWQ_CHAT_MODEL",
    "CHAT_MODEL",
    "MODEL_NAME",
)
"""Where the chat model is read from, first set wins: Yap's names, then the seeds' (a built TensorRT-LLM engine
or checkpoint before a pre-quantized or plain model id)."""

CHAT_GPU_FRAC_ALONE = 0.9
"""`CHAT_GPU_FRAC` when the chat model has the GPU to itself."""
CHAT_GPU_FRAC_SHARED = 0.7
"""`CHAT_GPU_FRAC` when the tool classifier shares the GPU (`DEPLOY_MODE=both`), as the seed deploys it."""

STREAM_TOKEN_MS = 12.5
"""The decode step `STREAM_FLUSH_MS` is turned into engine tokens with: 80 tokens/s per stream, what a GPU
gives each of 64 voice sessions."""


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


def env_names(*names: str) -> AliasChoices:
    """The environment variables (first = the documented one) and field name a setting is read from."""
    return AliasChoices(*names)


_S = TypeVar("_S", bound=BaseSettings)


def load_settings(cls: type[_S], **overrides: Any) -> _S:
    """Build `cls` from the environment plus `overrides`, turning validation errors into `SettingsError`.

    The message names the environment variable (the first alias of the field) and the fix.
    """
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field_name = str(err["loc"][0]) if err["loc"] else "?"
            field = cls.model_fields.get(field_name)
            alias = field.validation_alias if field else None
            env_name = alias.choices[0] if isinstance(alias, AliasChoices) else field_name
            given = err.get("input")
            shown = "" if isinstance(given, dict) or err["type"] == "missing" else f" (got {given!r})"
            problems.append(f"{env_name}: {err['msg']}{shown}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


class EngineSettings(BaseSettings):
    """What engine to run, on which model, with which limits."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, populate_by_name=True, protected_namespaces=()
    )

    engine: Literal["fake", "vllm", "trt", "openai"] = Field(
        "vllm",
        validation_alias=env_names("ENGINE", "INFERENCE_ENGINE", "YAP_ENGINE", "engine"),
        description="which adapter serves the chat model",
    )
    model: str | None = Field(
        None,
        validation_alias=env_names(*MODEL_ENV_NAMES, "model"),
        description="HF id or local path of the chat model; the first of MODEL_ENV_NAMES set wins; unset = the "
        "embedded default (SmolLM2-135M-Instruct, built offline); `demo` = the tiny random-weight test model",
    )
    engines_dir: Path = Field(
        Path("engines"),
        validation_alias=env_names("YAP_ENGINES_DIR", "engines_dir"),
        description="local store of built demo models and quantized checkpoints",
    )
    chat_max_len: int = Field(
        5025,
        gt=0,
        validation_alias=env_names("CHAT_MAX_LEN", "chat_max_len"),
        description="prompt budget in tokens (history is trimmed to fit)",
    )
    chat_max_out: int = Field(
        150,
        gt=0,
        validation_alias=env_names("CHAT_MAX_OUT", "chat_max_out"),
        description="maximum reply length in tokens",
    )
    stream_flush_ms: float = Field(
        50.0,
        ge=0,
        le=1000,
        validation_alias=env_names("STREAM_FLUSH_MS", "stream_flush_ms"),
        description="streaming: after a reply's first frame, text is sent at most this often (ms); 0 = a frame "
        "per engine delta. Also sets the engines' own stream_interval (see stream_interval_tokens)",
    )
    chat_gpu_frac: float = Field(
        CHAT_GPU_FRAC_ALONE,
        gt=0,
        le=1,
        validation_alias=env_names("CHAT_GPU_FRAC", "chat_gpu_frac"),
        description="fraction of GPU memory the chat engine may use; unset = 0.90 alone, 0.70 in DEPLOY_MODE=both",
    )
    kv_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float16"] = Field(
        "auto",
        validation_alias=env_names("KV_DTYPE", "kv_dtype"),
        description="KV-cache dtype; the seed's int8 is refused (use fp8)",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        validation_alias=env_names("YAP_DTYPE", "TRT_DTYPE", "dtype"),
        description="model weights dtype; auto = bfloat16 on a GPU and on a CPU with native bf16 (avx512_bf16 or "
        "amx_bf16), float32 on any other CPU",
    )
    seed: int = Field(0, validation_alias=env_names("YAP_SEED", "seed"), description="engine-level random seed")
    vllm_max_num_seqs: int = Field(
        64,
        gt=0,
        validation_alias=env_names("YAP_VLLM_MAX_NUM_SEQS", "vllm_max_num_seqs"),
        description="vLLM: most sequences scheduled at once",
    )
    vllm_enforce_eager: bool | None = Field(
        None,
        validation_alias=env_names("YAP_VLLM_ENFORCE_EAGER", "ENFORCE_EAGER", "vllm_enforce_eager"),
        description="vLLM: skip torch.compile/CUDA graphs; unset = on for CPU (fast start), off on GPU",
    )
    vllm_enable_prefix_caching: bool = Field(
        True,
        validation_alias=env_names("YAP_VLLM_ENABLE_PREFIX_CACHING", "vllm_enable_prefix_caching"),
        description="vLLM: automatic prefix caching",
    )
    vllm_scheduling_policy: Literal["fcfs", "priority"] = Field(
        "fcfs",
        validation_alias=env_names("YAP_VLLM_SCHEDULING_POLICY", "vllm_scheduling_policy"),
        description="vLLM: `priority` runs prompt warms (prefill) at the lowest priority, behind every reply",
    )
    vllm_tensor_parallel_size: int = Field(
        1,
        gt=0,
        validation_alias=env_names("YAP_VLLM_TENSOR_PARALLEL_SIZE", "TENSOR_PARALLEL", "vllm_tensor_parallel_size"),
        description="vLLM: GPUs per model",
    )
    vllm_data_parallel_size: int = Field(
        1,
        gt=0,
        validation_alias=env_names("YAP_VLLM_DATA_PARALLEL_SIZE", "vllm_data_parallel_size"),
        description="vLLM: engine replicas on this host (one per GPU group); each session is pinned to a "
        "rank through `data_parallel_rank`",
    )
    cache_reset_interval_s: float = Field(
        0.0,
        ge=0,
        validation_alias=env_names("CACHE_RESET_INTERVAL_SECONDS", "cache_reset_interval_s"),
        description="vLLM: reset the prefix cache every this many seconds (counted by the cache-reset metric); "
        "0 = never (the default)",
    )
    vllm_cpu_kvcache_gib: float = Field(
        1.0,
        gt=0,
        validation_alias=env_names("VLLM_CPU_KVCACHE_SPACE", "YAP_VLLM_CPU_KVCACHE_GIB", "vllm_cpu_kvcache_gib"),
        description="vLLM CPU build: KV-cache size in GiB (its default of 92% of RAM fails)",
    )
    trt_kv_free_gpu_frac: float | None = Field(
        None,
        gt=0,
        le=1,
        validation_alias=env_names("TRT_KV_FREE_GPU_FRAC", "YAP_TRT_KV_FREE_GPU_FRAC", "trt_kv_free_gpu_frac"),
        description="TensorRT-LLM: share of the GPU memory still free after the weights load that the KV cache "
        "takes; unset = CHAT_GPU_FRAC",
    )
    trt_max_batch_size: int = Field(
        64,
        gt=0,
        validation_alias=env_names("TRT_MAX_BATCH_SIZE", "YAP_TRT_MAX_BATCH_SIZE", "trt_max_batch_size"),
        description="TensorRT-LLM: the largest batch the engine is set up for; a prebuilt engine's baked-in value wins",
    )
    trt_batch_size: int | None = Field(
        None,
        gt=0,
        validation_alias=env_names("TRT_BATCH_SIZE", "YAP_TRT_BATCH_SIZE", "trt_batch_size"),
        description="TensorRT-LLM: requests batched at once, at most the engine's max batch size (checked at "
        "start-up); unset = that max",
    )
    trt_max_num_tokens: int | None = Field(
        None,
        gt=0,
        validation_alias=env_names("TRT_MAX_NUM_TOKENS", "YAP_TRT_MAX_NUM_TOKENS", "trt_max_num_tokens"),
        description="TensorRT-LLM: most tokens in one forward pass; unset = 8192, or a prebuilt engine's own",
    )
    trt_max_input_len: int | None = Field(
        None,
        gt=0,
        validation_alias=env_names("TRT_MAX_INPUT_LEN", "YAP_TRT_MAX_INPUT_LEN", "trt_max_input_len"),
        description="TensorRT-LLM: longest prompt in tokens; unset = CHAT_MAX_LEN",
    )
    trt_max_output_len: int | None = Field(
        None,
        gt=0,
        validation_alias=env_names("TRT_MAX_OUTPUT_LEN", "YAP_TRT_MAX_OUTPUT_LEN", "trt_max_output_len"),
        description="TensorRT-LLM: longest reply in tokens; unset = CHAT_MAX_OUT",
    )
    trt_legacy_engine: bool | None = Field(
        None,
        validation_alias=env_names("TRT_LEGACY_ENGINE", "YAP_TRT_LEGACY_ENGINE", "trt_legacy_engine"),
        description="TensorRT-LLM: run on the TensorRT-engine backend instead of the PyTorch one; unset = only when "
        "MODEL is a prebuilt engine dir (config.json with build_config, rank*.engine)",
    )
    fake_text: str | None = Field(
        None,
        validation_alias=env_names("YAP_FAKE_TEXT", "fake_text"),
        description="fake engine: fixed reply text; unset = seeded words",
    )
    fake_tokens_per_s: float = Field(
        0.0,
        ge=0,
        validation_alias=env_names("YAP_FAKE_TOKENS_PER_S", "fake_tokens_per_s"),
        description="fake engine: streaming rate; 0 = as fast as possible",
    )
    fake_first_token_delay_s: float = Field(
        0.0,
        ge=0,
        validation_alias=env_names("YAP_FAKE_FIRST_TOKEN_DELAY_S", "fake_first_token_delay_s"),
        description="fake engine: delay before the first token",
    )

    # -- remote engine (ENGINE=openai): any OpenAI-compatible streaming server ----------------------
    openai_base_url: str | None = Field(
        None,
        validation_alias=env_names("OPENAI_BASE_URL", "YAP_OPENAI_BASE_URL", "openai_base_url"),
        description="remote engine: server origin, e.g. http://10.0.0.5:8000 (a trailing /v1 is accepted); "
        "a comma-separated list = replicas without a router (sessions kept on one by rendezvous hashing)",
    )
    openai_api_key: str | None = Field(
        None,
        repr=False,
        validation_alias=env_names("OPENAI_API_KEY", "YAP_OPENAI_API_KEY", "openai_api_key"),
        description="remote engine: API key sent as `Authorization: Bearer`; unset = none",
    )
    openai_model: str | None = Field(
        None,
        validation_alias=env_names("OPENAI_MODEL", "YAP_OPENAI_MODEL", "openai_model"),
        description="remote engine: served model name; unset = the first id of GET /v1/models",
    )
    openai_connect_timeout_s: float = Field(
        5.0,
        gt=0,
        validation_alias=env_names("YAP_OPENAI_CONNECT_TIMEOUT_S", "openai_connect_timeout_s"),
        description="remote engine: seconds to open a connection",
    )
    openai_read_timeout_s: float = Field(
        60.0,
        gt=0,
        validation_alias=env_names("YAP_OPENAI_READ_TIMEOUT_S", "openai_read_timeout_s"),
        description="remote engine: longest silence between two streamed chunks",
    )
    openai_connect_retries: int = Field(
        2,
        ge=0,
        validation_alias=env_names("YAP_OPENAI_CONNECT_RETRIES", "openai_connect_retries"),
        description="remote engine: retries when a connection cannot be opened (never once a request was sent)",
    )
    openai_session_header: str = Field(
        "X-Session-ID",
        min_length=1,
        validation_alias=env_names("YAP_OPENAI_SESSION_HEADER", "openai_session_header"),
        description="remote engine: header carrying the session id, for session-sticky routing",
    )
    openai_return_token_ids: bool = Field(
        True,
        validation_alias=env_names("YAP_OPENAI_RETURN_TOKEN_IDS", "openai_return_token_ids"),
        description="remote engine: ask for streamed token ids (vLLM's `return_token_ids`); off for servers "
        "that reject unknown fields",
    )
    openai_max_attempts: int = Field(
        4,
        ge=1,
        validation_alias=env_names("YAP_OPENAI_MAX_ATTEMPTS", "openai_max_attempts"),
        description="remote engine: attempts per turn across replicas (retry before the first token, "
        "continuation from the streamed tokens after it); 1 = no failover",
    )
    openai_health_interval_s: float = Field(
        2.0,
        ge=0,
        validation_alias=env_names("YAP_OPENAI_HEALTH_INTERVAL_S", "openai_health_interval_s"),
        description="remote engine: seconds between health checks of each replica URL (several URLs); 0 = none",
    )
    openai_tokenizer: str | None = Field(
        None,
        validation_alias=env_names("YAP_OPENAI_TOKENIZER", "openai_tokenizer"),
        description="remote engine: HF id or path of the served model's tokenizer, for prompt budgeting in "
        "the server; `fake` = the fake engine's (replicas serving ENGINE=fake); unset = none",
    )

    @field_validator("kv_dtype", mode="before")
    @classmethod
    def _refuse_int8_kv(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "int8":
            raise ValueError(
                "KV_DTYPE=int8 (a seed value) is not supported by vLLM or TensorRT-LLM here; use KV_DTYPE=fp8 "
                "(8-bit KV cache) or auto"
            )
        return value

    @field_validator("openai_base_url")
    @classmethod
    def _base_urls(cls, value: str | None) -> str | None:
        if value is None:
            return value
        urls = [url.strip() for url in value.split(",")]
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(
                    f"OPENAI_BASE_URL: {url!r} is not an http(s) URL; give one URL or a comma-separated list, "
                    "e.g. http://10.0.0.5:8000,http://10.0.0.6:8000"
                )
        if len(set(urls)) != len(urls):
            raise ValueError(f"OPENAI_BASE_URL lists a URL twice: {value!r}")
        return ",".join(urls)

    @property
    def openai_base_urls(self) -> list[str]:
        """`OPENAI_BASE_URL` as a list: one router/server, or several replicas."""
        return self.openai_base_url.split(",") if self.openai_base_url else []

    @field_validator("cache_reset_interval_s")
    @classmethod
    def _cache_reset_needs_vllm(cls, value: float, info: ValidationInfo) -> float:
        engine = info.data.get("engine")
        if value and engine not in (None, "vllm"):
            raise ValueError(
                f"CACHE_RESET_INTERVAL_SECONDS={value:g} resets vLLM's prefix cache, and ENGINE={engine} has none "
                "to reset; unset it or set it to 0"
            )
        return value

    def sharing_gpu(self) -> EngineSettings:
        """These settings for a GPU shared with the tool classifier (`DEPLOY_MODE=both`): an unset
        `CHAT_GPU_FRAC` becomes 0.70 instead of 0.90; a set one is kept."""
        if "chat_gpu_frac" in self.model_fields_set:
            return self
        return self.model_copy(update={"chat_gpu_frac": CHAT_GPU_FRAC_SHARED})

    @property
    def stream_interval_tokens(self) -> int:
        """`STREAM_FLUSH_MS` as the engines' `stream_interval` (vLLM, TensorRT-LLM): the tokens a decode of
        `STREAM_TOKEN_MS` each makes in that time, at least 1. A faster engine holds its tokens for less than
        `STREAM_FLUSH_MS`, a slower one for more; the first token always goes out at once."""
        return max(1, int(self.stream_flush_ms // STREAM_TOKEN_MS))

    @property
    def max_model_len(self) -> int:
        """Context length the engine is built with: prompt budget plus room for the reply."""
        return self.chat_max_len + self.chat_max_out

    @property
    def demo_model_dir(self) -> Path:
        """Where the tiny random-weight test model is built."""
        return self.engines_dir / DEMO_CHAT_NAME

    @property
    def default_model_dir(self) -> Path:
        """Where the embedded default model (SmolLM2-135M-Instruct) is built."""
        return self.engines_dir / SMOLLM2_NAME

    @property
    def demo_tool_dir(self) -> Path:
        """Where the demo tool classifier is built (the tool model when `TOOL_MODEL` is not set)."""
        return self.engines_dir / DEMO_TOOL_NAME

    def resolved_model(self) -> str:
        """The model to load: `MODEL` when set (`demo` = the tiny test model), else the embedded default's dir."""
        if self.model is None:
            return str(self.default_model_dir)
        if self.model == DEMO_MODEL_ALIAS:
            return str(self.demo_model_dir)
        return self.model

    @classmethod
    def from_env(cls, **overrides: Any) -> EngineSettings:
        """Read the environment (plus `overrides` by field name); raise `SettingsError` naming a bad variable."""
        return load_settings(cls, **overrides)
