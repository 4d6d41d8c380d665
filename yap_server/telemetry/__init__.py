"""Telemetry: Prometheus always; OpenTelemetry, Sentry and JSON logs when configured (see `core`)."""

from __future__ import annotations

from .core import ConnectionTelemetry, Telemetry, TurnTelemetry
from .logs import JsonLogFormatter, configure_logging
from .prometheus import GpuCollector, PrometheusMetrics
from .settings import TelemetrySettings

__all__ = [
    "ConnectionTelemetry",
    "GpuCollector",
    "JsonLogFormatter",
    "PrometheusMetrics",
    "Telemetry",
    "TelemetrySettings",
    "TurnTelemetry",
    "configure_logging",
]
