"""The seed system's variables that Yap does not read as a setting of its own.

Every other seed variable is an alias of a Yap setting (see README "Settings"). The ones here either
describe what Yap always does (accepted with the value that means so) or something Yap cannot do:
`SeedSettings.from_env()` then stops start-up with a message naming the variable and what to set
instead. Nothing a seed env file sets is ignored silently.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from yap_engines.settings import SettingsError, env_names, load_settings

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SeedSettings(BaseSettings):
    """Seed variables without a Yap setting; `from_env` raises `SettingsError` for one Yap cannot honour."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, populate_by_name=True)

    trt_repo_dir: str | None = Field(None, validation_alias=env_names("TRT_REPO_DIR", "trt_repo_dir"))
    mpi_version_pin: str | None = Field(None, validation_alias=env_names("MPI_VERSION_PIN", "mpi_version_pin"))
    awq_cache_dir: str | None = Field(None, validation_alias=env_names("AWQ_CACHE_DIR", "awq_cache_dir"))
    ws_close_idle_code: str | None = Field(None, validation_alias=env_names("WS_CLOSE_IDLE_CODE", "ws_close_idle_code"))
    concurrent_model_call: str | None = Field(
        None, validation_alias=env_names("CONCURRENT_MODEL_CALL", "concurrent_model_call")
    )
    orch_enable_request_logs: str | None = Field(
        None, validation_alias=env_names("ORCH_ENABLE_REQUEST_LOGS", "orch_enable_request_logs")
    )

    def problems(self) -> list[str]:
        """One message per variable set to something Yap cannot honour, naming it and the alternative."""
        concurrent = (self.concurrent_model_call or "").strip().lower()
        request_logs = (self.orch_enable_request_logs or "").strip().lower()
        checks = [
            (
                self.trt_repo_dir is not None,
                "TRT_REPO_DIR is not used: Yap quantizes with the pip-installed TensorRT-LLM in YAP_QUANT_VENV "
                "(`yap quant`); unset TRT_REPO_DIR",
            ),
            (
                self.mpi_version_pin is not None,
                "MPI_VERSION_PIN is not used: Yap installs TensorRT-LLM and its MPI with pip; unset MPI_VERSION_PIN",
            ),
            (
                self.awq_cache_dir is not None,
                "AWQ_CACHE_DIR is not used: Yap keeps quantized builds in YAP_ENGINES_DIR (default engines/); "
                "set YAP_ENGINES_DIR instead",
            ),
            (
                self.ws_close_idle_code is not None and self.ws_close_idle_code.strip() != "4000",
                f"WS_CLOSE_IDLE_CODE={self.ws_close_idle_code}: Yap always closes idle sockets with 4000; "
                "unset WS_CLOSE_IDLE_CODE (WS_IDLE_TIMEOUT_S sets when)",
            ),
            (
                self.concurrent_model_call is not None and concurrent not in _TRUE,
                f"CONCURRENT_MODEL_CALL={self.concurrent_model_call}: Yap always runs the tool classifier alongside "
                "the chat model's prefill; unset CONCURRENT_MODEL_CALL or set it to 1",
            ),
            (
                self.orch_enable_request_logs is not None and request_logs not in _FALSE,
                f"ORCH_ENABLE_REQUEST_LOGS={self.orch_enable_request_logs}: Yap never logs request content; unset "
                "it or set it to false (LOG_LEVEL=debug logs request ids and timings)",
            ),
        ]
        return [message for refused, message in checks if refused]

    @classmethod
    def from_env(cls, **overrides: Any) -> SeedSettings:
        """Read the seed variables; raise `SettingsError` naming each one Yap cannot honour."""
        settings = load_settings(cls, **overrides)
        problems = settings.problems()
        if problems:
            raise SettingsError("seed settings Yap cannot honour: " + "; ".join(problems))
        return settings
