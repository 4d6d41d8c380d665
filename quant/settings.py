"""Quantization and build settings, read once from the environment (then `.env`, then defaults).

Every variable is listed once below. Flags of `yap quant ...` override them by field name
(`QuantSettings.from_env(mode="fp8")`). The Hub token is read only from `HF_TOKEN` /
`HUGGINGFACE_HUB_TOKEN`: there is deliberately no flag for it, so it never lands in a command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from yap_engines.settings import env_names, load_settings


class QuantSettings(BaseSettings):
    """What to quantize, how to calibrate, where artifacts go, and where to push them."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, populate_by_name=True, protected_namespaces=()
    )

    model: str | None = Field(
        None, validation_alias=env_names("MODEL", "model"), description="HF id or local dir; unset = the demo model"
    )
    revision: str | None = Field(
        None, validation_alias=env_names("MODEL_REVISION", "revision"), description="hub revision (branch, tag or sha)"
    )
    backend: str = Field(
        "vllm", validation_alias=env_names("ENGINE", "INFERENCE_ENGINE", "backend"), description="vllm | trt"
    )
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
    engines_dir: Path = Field(
        Path("engines"), validation_alias=env_names("YAP_ENGINES_DIR", "engines_dir"), description="artifact store"
    )
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
        128, gt=0, validation_alias=env_names("AWQ_NSAMPLES", "awq_nsamples"), description="llm-compressor samples"
    )
    awq_seqlen: int = Field(
        512, gt=0, validation_alias=env_names("AWQ_SEQLEN", "awq_seqlen"), description="llm-compressor sample length"
    )
    trt_calib_dataset: str | None = Field(
        None,
        validation_alias=env_names("TRT_CALIB_DATASET", "trt_calib_dataset"),
        description="ModelOpt calibration set; unset = AWQ_CALIB_DATASET, then the embedded texts",
    )
    trt_calib_size: int = Field(
        512, gt=0, validation_alias=env_names("TRT_CALIB_SIZE", "trt_calib_size"), description="ModelOpt samples"
    )
    trt_calib_seqlen: int = Field(
        512, gt=0, validation_alias=env_names("TRT_CALIB_SEQLEN", "trt_calib_seqlen"), description="ModelOpt length"
    )
    trt_calib_batch_size: int = Field(
        1,
        gt=0,
        validation_alias=env_names("TRT_CALIB_BATCH_SIZE", "trt_calib_batch_size"),
        description="ModelOpt batch",
    )
    trt_awq_block_size: int = Field(
        128, gt=0, validation_alias=env_names("TRT_AWQ_BLOCK_SIZE", "trt_awq_block_size"), description="INT4-AWQ block"
    )
    trt_kv_cache_dtype: Literal["auto", "fp8"] = Field(
        "auto", validation_alias=env_names("TRT_KV_CACHE_DTYPE", "trt_kv_cache_dtype"), description="fp8 = FP8 KV cache"
    )
    legacy_engine: bool = Field(
        False,
        validation_alias=env_names("LEGACY_ENGINE", "legacy_engine"),
        description="also compile a TensorRT engine with trtllm-build (when installed)",
    )
    trt_max_batch_size: int = Field(8, gt=0, validation_alias=env_names("TRT_MAX_BATCH_SIZE", "trt_max_batch_size"))
    trt_max_input_len: int = Field(5025, gt=0, validation_alias=env_names("TRT_MAX_INPUT_LEN", "trt_max_input_len"))
    trt_max_seq_len: int = Field(5175, gt=0, validation_alias=env_names("TRT_MAX_SEQ_LEN", "trt_max_seq_len"))
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
        """Read the environment plus `overrides` (None values ignored); a bad value names its variable."""
        return load_settings(cls, **{k: v for k, v in overrides.items() if v is not None})
