"""Quantization and build settings, read once from the environment (then `.env`, then defaults).

Calibration defaults follow the project's seed: llm-compressor (AWQ, SmoothQuant) 64 samples x 2,048
tokens; ModelOpt 64 samples in batches of 16. Tests shrink them through the same fields.

Every variable is listed once below. Flags of `yap quant ...` override them by field name
(`QuantSettings.from_env(mode="fp8")`). What the serving engine also reads — the model (`MODEL` and its
seed aliases), the engine (`ENGINE`), the artifact store (`YAP_ENGINES_DIR`) and the TensorRT-LLM sizes
(`TRT_MAX_BATCH_SIZE`, `TRT_MAX_INPUT_LEN`) — is parsed only by `EngineSettings`; `from_env` takes
those fields from it, so a build and the server it feeds never disagree. The Hub token is read only from `HF_TOKEN` /
`HUGGINGFACE_HUB_TOKEN`: there is deliberately no flag for it, so it never lands in a command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from yap_engines.settings import EngineSettings, env_names, load_settings

ENGINE_FIELDS = EngineSettings.model_fields


class QuantSettings(BaseSettings):
    """What to quantize, how to calibrate, where artifacts go, and where to push them."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, populate_by_name=True, protected_namespaces=()
    )

    model: str | None = Field(None, description="HF id or local dir; unset = the demo model (from EngineSettings)")
    revision: str | None = Field(
        None, validation_alias=env_names("MODEL_REVISION", "revision"), description="hub revision (branch, tag or sha)"
    )
    backend: str = Field("vllm", description="vllm | trt (from EngineSettings' ENGINE)")
    mode: str = Field(
        "auto", validation_alias=env_names("QUANT", "mode"), description="auto|4bit|awq|8bit|fp8|int8|none"
    )
    quantization: str | None = Field(
        None,
        validation_alias=env_names("QUANTIZATION", "quantization"),
        description="override the method (e.g. fp8, int8_sq, awq); refused when the GPU cannot run it",
    )
    sm: str | None = Field(
        None, validation_alias=env_names("SM", "sm"), description="GPU SM to plan for (e.g. 90); unset = detect"
    )
    engines_dir: Path = Field(Path("engines"), description="artifact store (from EngineSettings' YAP_ENGINES_DIR)")
    quant_venv: Path = Field(
        Path(".venv-quant"),
        validation_alias=env_names("YAP_QUANT_VENV", "quant_venv"),
        description="the quantization tools' own environment",
    )
    force_rebuild: bool = Field(
        False, validation_alias=env_names("FORCE_REBUILD", "force_rebuild"), description="rebuild even on a cache hit"
    )
    awq_calib_dataset: str | None = Field(
        None,
        validation_alias=env_names("AWQ_CALIB_DATASET", "awq_calib_dataset"),
        description="calibration set: a local dir/file or an HF dataset name; unset = the embedded texts",
    )
    awq_nsamples: int = Field(
        64, gt=0, validation_alias=env_names("AWQ_NSAMPLES", "awq_nsamples"), description="llm-compressor samples"
    )
    awq_seqlen: int = Field(
        2048, gt=0, validation_alias=env_names("AWQ_SEQLEN", "awq_seqlen"), description="llm-compressor sample length"
    )
    trt_calib_dataset: str | None = Field(
        None,
        validation_alias=env_names("TRT_CALIB_DATASET", "trt_calib_dataset"),
        description="ModelOpt calibration set; unset = AWQ_CALIB_DATASET, then the embedded texts",
    )
    trt_calib_size: int = Field(
        64, gt=0, validation_alias=env_names("TRT_CALIB_SIZE", "trt_calib_size"), description="ModelOpt samples"
    )
    trt_calib_seqlen: int = Field(
        512, gt=0, validation_alias=env_names("TRT_CALIB_SEQLEN", "trt_calib_seqlen"), description="ModelOpt length"
    )
    trt_calib_batch_size: int = Field(
        16,
        gt=0,
        validation_alias=env_names("TRT_CALIB_BATCH_SIZE", "trt_calib_batch_size"),
        description="ModelOpt batch",
    )
    trt_awq_block_size: int = Field(
        128, gt=0, validation_alias=env_names("TRT_AWQ_BLOCK_SIZE", "trt_awq_block_size"), description="INT4-AWQ block"
    )
    trt_smoothquant_alpha: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        validation_alias=env_names("TRT_SMOOTHQUANT_ALPHA", "trt_smoothquant_alpha"),
        description="int8_sq: SmoothQuant migration strength. 0.8 keeps SmolLM2 within the int8_sq bound (+6.6%, "
        "top-1 88.1%); 0.5 gives +26% and ModelOpt's own default, 1.0, +33% (benchmarks/quant-quality.md)",
    )
    trt_kv_cache_dtype: Literal["auto", "fp8"] = Field(
        "auto", validation_alias=env_names("TRT_KV_CACHE_DTYPE", "trt_kv_cache_dtype"), description="fp8 = FP8 KV cache"
    )
    legacy_engine: bool = Field(
        False,
        validation_alias=env_names("LEGACY_ENGINE", "legacy_engine"),
        description="also compile a TensorRT engine with trtllm-build (when installed)",
    )
    trt_max_batch_size: int = Field(
        ENGINE_FIELDS["trt_max_batch_size"].default,
        gt=0,
        description="the largest batch a legacy engine is built for: EngineSettings' TRT_MAX_BATCH_SIZE, the value "
        "`yap serve` reads (a prebuilt engine's baked-in value is what serving then uses)",
    )
    trt_max_input_len: int = Field(
        ENGINE_FIELDS["chat_max_len"].default, gt=0, description="EngineSettings' TRT_MAX_INPUT_LEN (else CHAT_MAX_LEN)"
    )
    trt_max_seq_len: int = Field(5175, gt=0, validation_alias=env_names("TRT_MAX_SEQ_LEN", "trt_max_seq_len"))
    eval_tokens: int = Field(
        16384,
        gt=1,
        validation_alias=env_names("QUANT_EVAL_TOKENS", "eval_tokens"),
        description="`yap quant eval`: tokens of the held-out text to score (the whole text is about 14,500)",
    )
    eval_window: int = Field(
        1024,
        gt=1,
        validation_alias=env_names("QUANT_EVAL_WINDOW", "eval_window"),
        description="`yap quant eval`: tokens per forward pass (non-overlapping windows)",
    )
    eval_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        validation_alias=env_names("QUANT_EVAL_DTYPE", "eval_dtype"),
        description="`yap quant eval`: the compute dtype of the base and the artifact. float32 measures the "
        "quantization alone: bf16 compute by itself changes 2.6% of SmolLM2's top-1 tokens",
    )
    hf_push_repo_id: str | None = Field(
        None, validation_alias=env_names("HF_PUSH_REPO_ID", "hf_push_repo_id"), description="owner/name to push to"
    )
    hf_push_private: bool = Field(
        True, validation_alias=env_names("HF_PUSH_PRIVATE", "hf_push_private"), description="create the repo private"
    )
    hf_token: SecretStr | None = Field(
        None, validation_alias=env_names("HF_TOKEN", "HUGGINGFACE_HUB_TOKEN"), description="Hub token (env only)"
    )
    hf_endpoint: str = Field(
        "https://huggingface.co", validation_alias=env_names("HF_ENDPOINT", "hf_endpoint"), description="Hub URL"
    )

    def calib_dataset(self, tool: str) -> str | None:
        """The calibration dataset for a tool: TRT_CALIB_DATASET falls back to AWQ_CALIB_DATASET."""
        if tool == "modelopt":
            return self.trt_calib_dataset or self.awq_calib_dataset
        return self.awq_calib_dataset

    @classmethod
    def from_env(cls, **overrides: Any) -> QuantSettings:
        """Read the environment plus `overrides` (None values ignored); a bad value names its variable.

        The fields the serving engine shares come from `EngineSettings.from_env()`, unless overridden."""
        given = {k: v for k, v in overrides.items() if v is not None}
        engine = EngineSettings.from_env()
        shared = {
            "model": engine.model,
            "backend": engine.engine,
            "engines_dir": engine.engines_dir,
            "trt_max_batch_size": engine.trt_max_batch_size,
            "trt_max_input_len": engine.trt_max_input_len or engine.chat_max_len,
        }
        return load_settings(cls, **{**{k: v for k, v in shared.items() if v is not None}, **given})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Fields without an environment alias (the ones `EngineSettings` owns) are never read from the
        environment here: only by name, from `from_env` or a caller."""
        return init_settings, _AliasedOnly(env_settings), _AliasedOnly(dotenv_settings), file_secret_settings


class _AliasedOnly(PydanticBaseSettingsSource):
    """An environment source limited to the fields that declare their variables (`validation_alias`)."""

    def __init__(self, source: PydanticBaseSettingsSource) -> None:
        super().__init__(source.settings_cls)
        self.source = source
        self.names = {
            choice.lower()
            for field in source.settings_cls.model_fields.values()
            if field.validation_alias is not None
            for choice in getattr(field.validation_alias, "choices", [field.validation_alias])
            if isinstance(choice, str)
        }

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {key: value for key, value in self.source().items() if key.lower() in self.names}
