"""Server settings, read once from the environment (then `.env`, then defaults).

Use `ServerSettings.from_env(**overrides)`; a bad value raises `SettingsError` naming the variable.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from yap_engines.settings import load_settings


class ServerSettings(BaseSettings):
    """Where the server listens and how it logs."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, populate_by_name=True)

    host: str = Field(
        "127.0.0.1", validation_alias=AliasChoices("YAP_HOST", "HOST", "host"), description="interface to bind"
    )
    port: int = Field(
        8000, ge=0, le=65535, validation_alias=AliasChoices("YAP_PORT", "PORT", "port"), description="TCP port"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", validation_alias=AliasChoices("LOG_LEVEL", "log_level"), description="uvicorn and yap log level"
    )

    @classmethod
    def from_env(cls, **overrides: Any) -> ServerSettings:
        """Read the environment (plus `overrides` by field name); raise `SettingsError` naming a bad variable."""
        return load_settings(cls, **overrides)
