"""Telemetry settings (OpenTelemetry, Sentry, logs, /metrics access), read once from the environment."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from yap_engines.settings import env_names, load_settings

AXIOM_ENDPOINT = "https://api.axiom.co"


class TelemetrySettings(BaseSettings):
    """Telemetry configuration; each field names its variable first. Nothing set = Prometheus only."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, populate_by_name=True)

    metrics_public: bool = Field(
        False, validation_alias=env_names("METRICS_PUBLIC", "metrics_public"), description="/metrics without a key"
    )
    gpu_metrics: bool = Field(
        True, validation_alias=env_names("YAP_GPU_METRICS", "gpu_metrics"), description="NVML gauges on /metrics"
    )
    log_format: Literal["text", "json"] = Field(
        "text", validation_alias=env_names("LOG_FORMAT", "log_format"), description="json: one JSON object a line"
    )
    otlp_endpoint: str | None = Field(
        None,
        validation_alias=env_names("OTEL_EXPORTER_OTLP_ENDPOINT", "otlp_endpoint"),
        description="OTLP/HTTP base URL; /v1/traces and /v1/metrics are appended",
    )
    otlp_headers: str | None = Field(
        None, validation_alias=env_names("OTEL_EXPORTER_OTLP_HEADERS", "otlp_headers"), description="k=v,k2=v2"
    )
    axiom_api_token: SecretStr | None = Field(
        None, validation_alias=env_names("AXIOM_API_TOKEN", "axiom_api_token"), description="fills the Axiom endpoint"
    )
    axiom_dataset: str = Field(
        "text-inference-api",
        min_length=1,
        validation_alias=env_names("AXIOM_DATASET", "axiom_dataset"),
        description="Axiom dataset (the seed's default); AXIOM_API_TOKEN alone exports to it",
    )
    service_name: str = Field("yap-text-inference-api", validation_alias=env_names("OTEL_SERVICE_NAME", "service_name"))
    traces_export_interval_ms: int = Field(
        5000, gt=0, validation_alias=env_names("OTEL_TRACES_EXPORT_INTERVAL_MS", "traces_export_interval_ms")
    )
    metrics_export_interval_ms: int = Field(
        15000, gt=0, validation_alias=env_names("OTEL_METRICS_EXPORT_INTERVAL_MS", "metrics_export_interval_ms")
    )
    traces_batch_size: int = Field(512, gt=0, validation_alias=env_names("OTEL_TRACES_BATCH_SIZE", "traces_batch_size"))
    cloud_platform: str | None = Field(None, validation_alias=env_names("CLOUD_PLATFORM", "cloud_platform"))
    environment: str = Field(
        "production",
        validation_alias=env_names(
            "DEPLOYMENT_ENVIRONMENT", "YAP_ENVIRONMENT", "ENVIRONMENT", "AXIOM_ENVIRONMENT", "environment"
        ),
        description="deployment.environment of traces and metrics, and Sentry's default environment (seed alias: "
        "AXIOM_ENVIRONMENT)",
    )
    sentry_dsn: SecretStr | None = Field(None, validation_alias=env_names("SENTRY_DSN", "sentry_dsn"))
    sentry_environment: str | None = Field(None, validation_alias=env_names("SENTRY_ENVIRONMENT", "sentry_environment"))
    sentry_release: str | None = Field(None, validation_alias=env_names("SENTRY_RELEASE", "sentry_release"))
    sentry_sample_rate: float = Field(
        1.0, ge=0, le=1, validation_alias=env_names("SENTRY_SAMPLE_RATE", "sentry_sample_rate")
    )
    sentry_send_text: bool = Field(
        False,
        validation_alias=env_names("SENTRY_SEND_TEXT", "sentry_send_text"),
        description="let user text (utterances, replies, local variables) into Sentry events",
    )

    def otlp_target(self) -> tuple[str, dict[str, str]] | None:
        """The OTLP base URL and headers, or None when OpenTelemetry export is not configured."""
        headers = dict(item.split("=", 1) for item in (self.otlp_headers or "").split(",") if "=" in item)
        headers = {k.strip(): v.strip() for k, v in headers.items()}
        endpoint = self.otlp_endpoint
        if self.axiom_api_token is not None:
            endpoint = endpoint or AXIOM_ENDPOINT
            headers["Authorization"] = f"Bearer {self.axiom_api_token.get_secret_value()}"
            headers["X-Axiom-Dataset"] = self.axiom_dataset
        return (endpoint.rstrip("/"), headers) if endpoint else None

    @classmethod
    def from_env(cls, **overrides: Any) -> TelemetrySettings:
        """Read the environment (plus `overrides` by field name); raise `SettingsError` naming a bad variable."""
        return load_settings(cls, **overrides)
