"""Telemetry: Prometheus metrics on `/metrics`, and optionally OpenTelemetry, Sentry and JSON logs.

`Telemetry.build(settings, api_keys)` makes one per app (it lives in lifespan state as
`"telemetry"`). The server reports through small methods: `connection_opened()` gives a
`ConnectionTelemetry`, whose `turn()` gives a `TurnTelemetry`. Yap's own metrics go to a per-app
`CollectorRegistry`; `/metrics` appends prometheus_client's global `REGISTRY` (where vLLM records
its engine metrics). OpenTelemetry (`telemetry_otel`) and Sentry (`telemetry_sentry`) are imported
only when configured; unconfigured, they cost nothing.

Metric names (Prometheus; OpenTelemetry uses the same names):

    yap_time_to_first_token_seconds        histogram  first visible token of a turn
    yap_request_duration_seconds{status}   histogram  a turn, start to terminal frame
    yap_inter_token_latency_seconds        histogram  between streamed deltas (OTel: mean per generation)
    yap_connection_duration_seconds        histogram  accepted WebSocket lifetime
    yap_connection_slot_wait_seconds       histogram  waiting for a connection slot
    yap_request_prompt_tokens              histogram  prompt tokens per generation
    yap_request_completion_tokens          histogram  completion tokens per generation
    yap_generations_per_session            histogram  turns a session ran
    yap_startup_duration_seconds           histogram  lifespan start-up (engines loaded)
    yap_tool_classification_seconds        histogram  tool classifier latency
    yap_requests_total{status}             counter    turns by terminal status (done/cancelled/error)
    yap_generation_tokens_total            counter    completion tokens
    yap_prompt_tokens_total                counter    prompt tokens
    yap_connections_rejected_total{reason} counter    auth / capacity refusals
    yap_session_churn_total{event}         counter    sessions started / ended
    yap_cancellations_total{reason}        counter    turns cancelled (client_request/barge_in/idle/disconnect)
    yap_errors_total{type}                 counter    error frames and internal errors by code
    yap_idle_disconnects_total             counter    connections closed for idling (4000)
    yap_rate_limit_violations_total{kind}  counter    messages / cancels / prompt_updates refused
    yap_tool_classifications_total{status} counter    tool decisions (yes/no)
    yap_cache_resets_total                 counter    prefix-cache resets
    yap_active_connections                 gauge
    yap_active_generations                 gauge
    yap_gpu_memory_{used,free,total}_bytes{gpu}, yap_gpu_utilization_percent{gpu}   NVML, when present
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import Request
from starlette.responses import Response

from yap_engines.settings import env_names, load_settings

from .auth import key_is_valid, presented_key, unauthorized

if TYPE_CHECKING:
    from .telemetry_otel import OtelTelemetry
    from .telemetry_sentry import SentryReporter

AXIOM_ENDPOINT = "https://api.axiom.co"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
SESSION_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)
TOKEN_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
COUNT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200)
STARTUP_BUCKETS = (0.1, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class ObservabilitySettings(BaseSettings):
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
    axiom_dataset: str | None = Field(None, validation_alias=env_names("AXIOM_DATASET", "axiom_dataset"))
    service_name: str = Field("yap", validation_alias=env_names("OTEL_SERVICE_NAME", "service_name"))
    traces_export_interval_ms: int = Field(
        5000, gt=0, validation_alias=env_names("OTEL_TRACES_EXPORT_INTERVAL_MS", "traces_export_interval_ms")
    )
    metrics_export_interval_ms: int = Field(
        60000, gt=0, validation_alias=env_names("OTEL_METRICS_EXPORT_INTERVAL_MS", "metrics_export_interval_ms")
    )
    traces_batch_size: int = Field(512, gt=0, validation_alias=env_names("OTEL_TRACES_BATCH_SIZE", "traces_batch_size"))
    cloud_platform: str | None = Field(None, validation_alias=env_names("CLOUD_PLATFORM", "cloud_platform"))
    environment: str | None = Field(
        None,
        validation_alias=env_names("DEPLOYMENT_ENVIRONMENT", "YAP_ENVIRONMENT", "ENVIRONMENT", "environment"),
        description="deployment.environment of traces and metrics",
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
        if self.axiom_api_token is not None and self.axiom_dataset:
            endpoint = endpoint or AXIOM_ENDPOINT
            headers["Authorization"] = f"Bearer {self.axiom_api_token.get_secret_value()}"
            headers["X-Axiom-Dataset"] = self.axiom_dataset
        return (endpoint.rstrip("/"), headers) if endpoint else None

    @classmethod
    def from_env(cls, **overrides: Any) -> ObservabilitySettings:
        """Read the environment (plus `overrides` by field name); raise `SettingsError` naming a bad variable."""
        return load_settings(cls, **overrides)


class GpuCollector(Collector):
    """GPU memory and utilisation per device from NVML; yields nothing without `pynvml` or a GPU."""

    def collect(self) -> Iterator[Metric]:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:
            return
        try:
            families = {
                "used": GaugeMetricFamily("yap_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"]),
                "free": GaugeMetricFamily("yap_gpu_memory_free_bytes", "GPU memory free", labels=["gpu"]),
                "total": GaugeMetricFamily("yap_gpu_memory_total_bytes", "GPU memory in all", labels=["gpu"]),
            }
            busy = GaugeMetricFamily("yap_gpu_utilization_percent", "GPU utilisation", labels=["gpu"])
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                for kind, family in families.items():
                    family.add_metric([str(index)], float(getattr(memory, kind)))
                busy.add_metric([str(index)], float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
            yield from (*families.values(), busy)
        except Exception:
            return
        finally:
            try:
                pynvml.nvmlShutdown()
            except Exception:
                pass


class PrometheusMetrics:
    """Yap's own metrics, registered in a registry of their own (one per app)."""

    def __init__(self, gpu: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        def histogram(name: str, doc: str, buckets: Sequence[float], labels: Sequence[str] = ()) -> Histogram:
            return Histogram(name, doc, labelnames=labels, buckets=buckets, registry=r)

        self.ttft = histogram("yap_time_to_first_token_seconds", "time to first token", LATENCY_BUCKETS)
        self.request_duration = histogram("yap_request_duration_seconds", "turn duration", LATENCY_BUCKETS, ("status",))
        self.inter_token = histogram("yap_inter_token_latency_seconds", "gap between deltas", TOKEN_GAP_BUCKETS)
        self.connection_duration = histogram("yap_connection_duration_seconds", "connection lifetime", SESSION_BUCKETS)
        self.slot_wait = histogram("yap_connection_slot_wait_seconds", "wait for a connection slot", LATENCY_BUCKETS)
        self.prompt_tokens = histogram("yap_request_prompt_tokens", "prompt tokens per generation", TOKEN_BUCKETS)
        self.completion_tokens = histogram(
            "yap_request_completion_tokens", "completion tokens per generation", TOKEN_BUCKETS
        )
        self.generations_per_session = histogram("yap_generations_per_session", "turns per session", COUNT_BUCKETS)
        self.startup = histogram("yap_startup_duration_seconds", "server start-up", STARTUP_BUCKETS)
        self.tool_latency = histogram("yap_tool_classification_seconds", "tool classifier latency", LATENCY_BUCKETS)
        self.requests = Counter("yap_requests", "turns by terminal status", ["status"], registry=r)
        self.tokens = Counter("yap_generation_tokens", "completion tokens generated", registry=r)
        self.prompt_tokens_total = Counter("yap_prompt_tokens", "prompt tokens", registry=r)
        self.rejected = Counter("yap_connections_rejected", "refused connections", ["reason"], registry=r)
        self.churn = Counter("yap_session_churn", "sessions started and ended", ["event"], registry=r)
        self.cancellations = Counter("yap_cancellations", "cancelled turns", ["reason"], registry=r)
        self.errors = Counter("yap_errors", "errors by type", ["type"], registry=r)
        self.idle = Counter("yap_idle_disconnects", "connections closed for idling", registry=r)
        self.rate_limited = Counter("yap_rate_limit_violations", "refused by a rate limit", ["kind"], registry=r)
        self.tool = Counter("yap_tool_classifications", "tool decisions", ["status"], registry=r)
        self.cache_resets = Counter("yap_cache_resets", "prefix-cache resets", registry=r)
        self.active_connections = Gauge("yap_active_connections", "open WebSocket connections", registry=r)
        self.active_generations = Gauge("yap_active_generations", "generations streaming", registry=r)
        if gpu:
            r.register(GpuCollector())

    def exposition(self) -> bytes:
        """Yap's metrics, then the global registry's (engine metrics, e.g. vLLM's)."""
        return generate_latest(self.registry) + generate_latest(REGISTRY)


class Telemetry:
    """Everything the server reports to, for one app. Build it with `Telemetry.build`."""

    def __init__(
        self,
        settings: ObservabilitySettings,
        otel: OtelTelemetry | None = None,
        sentry: SentryReporter | None = None,
    ) -> None:
        self.settings = settings
        self.prom = PrometheusMetrics(gpu=settings.gpu_metrics)
        self.otel = otel
        self.sentry = sentry
        self.active_generations = 0  # the one count: /status reads it, the gauge samples it
        self.prom.active_generations.set_function(lambda: self.active_generations)

    @classmethod
    def build(
        cls,
        settings: ObservabilitySettings | None = None,
        api_keys: Iterable[str] = (),
        *,
        span_exporter: Any = None,
        metric_reader: Any = None,
        sentry_transport: Any = None,
    ) -> Telemetry:
        """From settings; the exporters/transport stand in for the configured ones (tests pass in-memory ones).

        OpenTelemetry runs when `OTEL_EXPORTER_OTLP_ENDPOINT` (or Axiom) is set or an exporter is given;
        Sentry when `SENTRY_DSN` is set.
        """
        settings = settings or ObservabilitySettings.from_env()
        otel = sentry = None
        if settings.otlp_target() is not None or span_exporter is not None or metric_reader is not None:
            from .telemetry_otel import OtelTelemetry

            otel = OtelTelemetry(settings, span_exporter=span_exporter, metric_reader=metric_reader)
        if settings.sentry_dsn is not None:
            from .telemetry_sentry import SentryReporter

            sentry = SentryReporter(settings, tuple(api_keys), transport=sentry_transport)
        return cls(settings, otel, sentry)

    # -- recording (Prometheus always; OpenTelemetry when configured) ---------------------------
    def _count(self, counter: Counter, name: str, amount: float = 1, **labels: str) -> None:
        (counter.labels(**labels) if labels else counter).inc(amount)
        if self.otel is not None:
            self.otel.add(name, amount, labels)

    def _observe(self, histogram: Histogram, name: str, value: float, **labels: str) -> None:
        (histogram.labels(**labels) if labels else histogram).observe(value)
        if self.otel is not None:
            self.otel.record(name, value, labels)

    def _gauge(self, gauge: Gauge, name: str, change: int) -> None:
        gauge.inc(change)
        if self.otel is not None:
            self.otel.add(name, change, {}, up_down=True)

    def _generations(self, change: int) -> None:
        self.active_generations += change
        if self.otel is not None:
            self.otel.add("yap_active_generations", change, {}, up_down=True)

    def started_up(self, seconds: float) -> None:
        self._observe(self.prom.startup, "yap_startup_duration_seconds", seconds)

    def rejected(self, reason: str) -> None:
        """A connection refused before it was served (`auth`, `capacity`)."""
        self._count(self.prom.rejected, "yap_connections_rejected", reason=reason)

    def slot_waited(self, seconds: float) -> None:
        self._observe(self.prom.slot_wait, "yap_connection_slot_wait_seconds", seconds)

    def rate_limited(self, kind: str) -> None:
        self._count(self.prom.rate_limited, "yap_rate_limit_violations", kind=kind)

    def idle_disconnect(self) -> None:
        self._count(self.prom.idle, "yap_idle_disconnects")

    def cancelled(self, reason: str) -> None:
        self._count(self.prom.cancellations, "yap_cancellations", reason=reason)

    def error(self, code: str) -> None:
        self._count(self.prom.errors, "yap_errors", type=code)

    def cache_reset(self) -> None:
        self._count(self.prom.cache_resets, "yap_cache_resets")

    def tool_classified(self, status: str, latency_s: float) -> None:
        self._count(self.prom.tool, "yap_tool_classifications", status=status)
        self._observe(self.prom.tool_latency, "yap_tool_classification_seconds", latency_s)

    def report_exception(self, exc: BaseException, user_text: Sequence[str] = (), **tags: str | None) -> None:
        """Send `exc` to Sentry (when configured) tagged with ids; `user_text` is scrubbed unless allowed."""
        if self.sentry is not None:
            self.sentry.capture(exc, {k: v for k, v in tags.items() if v is not None}, user_text)

    def connection_opened(self, client_id: str | None = None) -> ConnectionTelemetry:
        return ConnectionTelemetry(self, client_id)

    # -- the endpoint and shutdown -------------------------------------------------------------
    def metrics_response(self, request: Request, api_keys: Iterable[str]) -> Response:
        """`GET /metrics`: Prometheus text; the API key is required unless `METRICS_PUBLIC=1`."""
        if not self.settings.metrics_public and not key_is_valid(presented_key(request), api_keys):
            return unauthorized()
        return Response(self.prom.exposition(), media_type=PROMETHEUS_CONTENT_TYPE)

    def shutdown(self) -> None:
        """Flush and stop the exporters (blocking; call it from a thread)."""
        if self.otel is not None:
            self.otel.shutdown()
        if self.sentry is not None:
            self.sentry.close()


class ConnectionTelemetry:
    """One accepted connection: its active gauge, duration, session churn and session span."""

    def __init__(self, telemetry: Telemetry, client_id: str | None) -> None:
        self.telemetry = telemetry
        self.client_id = client_id
        self.session_id: str | None = None
        self.generations = 0
        self.opened = time.perf_counter()
        self.span = (
            telemetry.otel.start_span("yap.session", None, {"yap.client_id": client_id}) if telemetry.otel else None
        )
        telemetry._gauge(telemetry.prom.active_connections, "yap_active_connections", 1)

    def session_started(self, session_id: str) -> None:
        """A `start` frame began a session (replacing any earlier one on this connection)."""
        if self.session_id is not None:
            self._session_ended()
        self.session_id = session_id
        self.telemetry._count(self.telemetry.prom.churn, "yap_session_churn", event="started")
        if self.span is not None:
            self.span.set_attribute("yap.session_id", session_id)

    def _session_ended(self) -> None:
        t = self.telemetry
        t._count(t.prom.churn, "yap_session_churn", event="ended")
        t._observe(t.prom.generations_per_session, "yap_generations_per_session", self.generations)
        self.generations = 0

    def turn(self, request_id: str) -> TurnTelemetry:
        self.generations += 1
        return TurnTelemetry(self, request_id)

    def closed(self) -> None:
        t = self.telemetry
        if self.session_id is not None:
            self._session_ended()
        t._gauge(t.prom.active_connections, "yap_active_connections", -1)
        t._observe(t.prom.connection_duration, "yap_connection_duration_seconds", time.perf_counter() - self.opened)
        if self.span is not None:
            self.span.end()


class TurnTelemetry:
    """One turn: its request span, its generation span, TTFT, token gaps, usage and terminal status."""

    def __init__(self, connection: ConnectionTelemetry, request_id: str) -> None:
        self.connection = connection
        self.telemetry = t = connection.telemetry
        self.request_id = request_id
        self.started = time.perf_counter()
        self._last_delta: float | None = None
        self._gaps, self._gap_total = 0, 0.0
        self.ended_with: str | None = None
        attributes = {"yap.request_id": request_id, "yap.session_id": connection.session_id}
        self.span = t.otel.start_span("yap.request", connection.span, attributes) if t.otel else None
        self.generation_span: Any = None

    def generation_started(self) -> None:
        t = self.telemetry
        t._generations(1)
        if t.otel is not None:
            self.generation_span = t.otel.start_span("yap.generation", self.span, {"yap.request_id": self.request_id})

    def tool_classified(self, status: str, latency_s: float) -> None:
        self.telemetry.tool_classified(status, latency_s)
        if self.span is not None:
            self.span.set_attribute("yap.tool_status", status)

    def report_exception(self, exc: BaseException, user_text: str | None = None) -> None:
        """Report `exc` to Sentry tagged with this turn's ids (its user text scrubbed unless allowed)."""
        self.telemetry.report_exception(
            exc,
            (user_text,) if user_text else (),
            session_id=self.connection.session_id,
            request_id=self.request_id,
            client_id=self.connection.client_id,
        )

    def delta(self) -> None:
        """A delta arrived from the engine. Prometheus observes every gap; OpenTelemetry, whose
        instruments cost far more per call, gets one mean gap per generation."""
        now = time.perf_counter()
        if self._last_delta is not None:
            gap = now - self._last_delta
            self.telemetry.prom.inter_token.observe(gap)
            self._gaps += 1
            self._gap_total += gap
        self._last_delta = now

    def first_token(self, ttft_s: float) -> None:
        self.telemetry._observe(self.telemetry.prom.ttft, "yap_time_to_first_token_seconds", ttft_s)

    def generation_ended(self, usage: Any) -> None:
        """The engine stream closed; `usage` (prompt/completion tokens) when it finished."""
        t = self.telemetry
        t._generations(-1)
        if usage is not None:
            t._count(t.prom.tokens, "yap_generation_tokens", usage.completion_tokens)
            t._count(t.prom.prompt_tokens_total, "yap_prompt_tokens", usage.prompt_tokens)
            t._observe(t.prom.completion_tokens, "yap_request_completion_tokens", usage.completion_tokens)
            t._observe(t.prom.prompt_tokens, "yap_request_prompt_tokens", usage.prompt_tokens)
        if t.otel is not None and self._gaps:
            t.otel.record("yap_inter_token_latency_seconds", self._gap_total / self._gaps, {})
        if self.generation_span is not None:
            if usage is not None:
                self.generation_span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
                self.generation_span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
            self.generation_span.end()
            self.generation_span = None

    def ended(self, status: str, error_code: str | None = None) -> None:
        """The turn's terminal frame went out (`done`, `cancelled`, `error`); only the first call counts."""
        if self.ended_with is not None:
            return
        self.ended_with = status
        t = self.telemetry
        t._count(t.prom.requests, "yap_requests", status=status)
        t._observe(
            t.prom.request_duration, "yap_request_duration_seconds", time.perf_counter() - self.started, status=status
        )
        if error_code is not None:
            t.error(error_code)
        if self.span is not None:
            self.span.set_attribute("yap.status", status)
            if error_code is not None:
                self.span.set_attribute("yap.error_code", error_code)
            self.span.end()


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record, with `session_id`/`request_id`/`client_id` when given as `extra`,
    and every configured API key replaced by `[redacted]`."""

    FIELDS = ("session_id", "request_id", "client_id")

    def __init__(self, api_keys: Iterable[str] = ()) -> None:
        super().__init__()
        self.api_keys = tuple(k for k in api_keys if k)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({f: getattr(record, f) for f in self.FIELDS if getattr(record, f, None) is not None})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        text = json.dumps(entry, default=str)
        for key in self.api_keys:
            text = text.replace(key, "[redacted]")
        return text


def configure_logging(settings: ObservabilitySettings, api_keys: Iterable[str] = ()) -> None:
    """With `LOG_FORMAT=json`, the `yap` loggers write JSON lines to stderr (idempotent: one handler)."""
    if settings.log_format != "json":
        return
    logger = logging.getLogger("yap")
    for handler in [h for h in logger.handlers if getattr(h, "yap_json", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter(api_keys))
    handler.yap_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False
