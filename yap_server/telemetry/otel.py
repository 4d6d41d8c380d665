"""OpenTelemetry for one app: its own tracer and meter providers (never the global ones), exported
over OTLP/HTTP, or to the exporter/reader a test passes in. Imported only when configured."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation, UpDownCounter
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from .prometheus import GpuReading, gpu_readings
from .settings import TelemetrySettings

Kind = Literal["histogram", "counter", "up_down"]

INSTRUMENTS: dict[str, tuple[Kind, str, str]] = {
    "text_inference.ttft": ("histogram", "s", "Time to first token"),
    "text_inference.request_latency": ("histogram", "s", "End-to-end request latency"),
    "text_inference.token_latency": ("histogram", "s", "Inter-token arrival time (mean per generation)"),
    "text_inference.connection_duration": ("histogram", "s", "WebSocket session duration"),
    "text_inference.connection_semaphore_wait": ("histogram", "s", "Slot acquisition wait"),
    "text_inference.prompt_tokens": ("histogram", "{token}", "Input prompt token count"),
    "text_inference.completion_tokens": ("histogram", "{token}", "Output completion token count"),
    "text_inference.generations_per_session": ("histogram", "{request}", "Requests per session"),
    "text_inference.startup_duration": ("histogram", "s", "Server startup time"),
    "text_inference.tool_classification_latency": ("histogram", "s", "Tool model inference time"),
    "text_inference.requests_total": ("counter", "{request}", "Total requests (status dimension)"),
    "text_inference.tokens_generated_total": ("counter", "{token}", "Total tokens generated"),
    "text_inference.prompt_tokens_total": ("counter", "{token}", "Total prompt tokens processed"),
    "text_inference.connections_rejected_total": ("counter", "{connection}", "Rejected connections (reason)"),
    "text_inference.session_churn_total": ("counter", "{session}", "Completed sessions"),
    "text_inference.cancellation_total": ("counter", "{request}", "Cancellations (reason)"),
    "text_inference.errors_total": ("counter", "{error}", "Errors (error.type dimension)"),
    "text_inference.timeout_disconnects_total": ("counter", "{connection}", "Idle timeout disconnects"),
    "text_inference.rate_limit_violations_total": ("counter", "{violation}", "Rate limit hits (kind)"),
    "text_inference.tool_classifications_total": ("counter", "{classification}", "Tool model calls (status)"),
    "text_inference.cache_resets_total": ("counter", "{reset}", "vLLM prefix-cache resets"),
    "text_inference.active_connections": ("up_down", "{connection}", "Current WebSocket connections"),
    "text_inference.active_generations": ("up_down", "{generation}", "Currently running generations"),
    # Yap's own, beyond the seed's: prompt warms (`prefill`) and how much of each prompt the cache served.
    "text_inference.warms_total": ("counter", "{warm}", "Prompt warms (event: started/completed/superseded/...)"),
    "text_inference.warm_tokens_total": ("counter", "{token}", "Prompt tokens of completed warms"),
    "text_inference.prompt_cached_share": ("histogram", "1", "Share of a turn's prompt served from the prefix cache"),
}
"""The seed's OpenTelemetry instruments (seed 001 "Metrics Reference"): name -> (kind, unit, description).
The gauges are up-down counters; the four GPU observables are `GPU_OBSERVABLES`."""

GPU_OBSERVABLES: dict[str, tuple[str, str, str]] = {
    "text_inference.gpu.memory_used": ("used", "By", "GPU memory in use"),
    "text_inference.gpu.memory_free": ("free", "By", "GPU memory available"),
    "text_inference.gpu.memory_total": ("total", "By", "Total GPU memory"),
    "text_inference.gpu.utilization": ("utilization", "%", "GPU compute utilization"),
}
"""Observable gauges read from NVML at each export, one point per device with `gpu.device.id`; none without NVML."""

ATTRIBUTE_KEYS = {"type": "error.type"}
"""Yap's Prometheus label -> the seed's OpenTelemetry dimension key, where they differ."""


def resource_for(settings: TelemetrySettings) -> Resource:
    attributes: dict[str, str] = {"service.name": settings.service_name}
    if settings.environment:
        attributes["deployment.environment"] = settings.environment
    if settings.cloud_platform:
        attributes["cloud.platform"] = settings.cloud_platform
    return Resource.create(attributes)


class OtelTelemetry:
    """Spans (session → request → generation) and the Prometheus metrics' twins, for one app.

    Without a test exporter/reader, spans go to `<endpoint>/v1/traces` in batches and metrics to
    `<endpoint>/v1/metrics` every `OTEL_METRICS_EXPORT_INTERVAL_MS`.
    """

    def __init__(
        self,
        settings: TelemetrySettings,
        span_exporter: SpanExporter | None = None,
        metric_reader: MetricReader | None = None,
    ) -> None:
        resource = resource_for(settings)
        target = settings.otlp_target()
        self.tracer_provider = TracerProvider(resource=resource)
        if span_exporter is not None:
            self.tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        elif target is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint, headers = target
            self.tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", headers=headers),
                    schedule_delay_millis=settings.traces_export_interval_ms,
                    max_export_batch_size=settings.traces_batch_size,
                )
            )
        readers: list[MetricReader] = []
        if metric_reader is not None:
            readers.append(metric_reader)
        elif target is not None:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            endpoint, headers = target
            readers.append(
                PeriodicExportingMetricReader(
                    OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", headers=headers),
                    export_interval_millis=settings.metrics_export_interval_ms,
                )
            )
        self.meter_provider = MeterProvider(
            resource=resource, metric_readers=readers, exemplar_filter=AlwaysOffExemplarFilter()
        )
        self.tracer = self.tracer_provider.get_tracer("yap_server")
        self.meter = self.meter_provider.get_meter("yap_server")
        self._instruments: dict[str, Counter | UpDownCounter | Histogram] = {}
        for name, (kind, unit, description) in INSTRUMENTS.items():
            instrument: Counter | UpDownCounter | Histogram
            if kind == "histogram":
                instrument = self.meter.create_histogram(name, unit=unit, description=description)
            elif kind == "counter":
                instrument = self.meter.create_counter(name, unit=unit, description=description)
            else:
                instrument = self.meter.create_up_down_counter(name, unit=unit, description=description)
            self._instruments[name] = instrument
        if settings.gpu_metrics:
            for name, (field, unit, description) in GPU_OBSERVABLES.items():
                self.meter.create_observable_gauge(
                    name, callbacks=[self._gpu_callback(field)], unit=unit, description=description
                )

    @staticmethod
    def _gpu_callback(field: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            readings: list[GpuReading] = gpu_readings()
            return [Observation(getattr(r, field), {"gpu.device.id": str(r.index)}) for r in readings]

        return observe

    def start_span(self, name: str, parent: trace.Span | None, attributes: Mapping[str, Any]) -> trace.Span:
        context = trace.set_span_in_context(parent) if parent is not None else None
        clean = {k: v for k, v in attributes.items() if v is not None}
        return self.tracer.start_span(name, context=context, attributes=clean)

    @staticmethod
    def _dimensions(attributes: Mapping[str, str]) -> dict[str, str] | None:
        return {ATTRIBUTE_KEYS.get(key, key): value for key, value in attributes.items()} or None

    def add(self, name: str, amount: float, attributes: Mapping[str, str], up_down: bool = False) -> None:
        """Add to the counter (or, for the gauges, up-down counter) `name`, one of `INSTRUMENTS`."""
        instrument = self._instruments[name]
        assert not isinstance(instrument, Histogram)
        instrument.add(amount, self._dimensions(attributes))

    def record(self, name: str, value: float, attributes: Mapping[str, str]) -> None:
        """Record a value in the histogram `name`, one of `INSTRUMENTS`."""
        instrument = self._instruments[name]
        assert isinstance(instrument, Histogram)
        instrument.record(value, self._dimensions(attributes))

    def shutdown(self) -> None:
        """Flush what is pending and stop both providers."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
