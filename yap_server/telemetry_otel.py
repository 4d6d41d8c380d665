"""OpenTelemetry for one app: its own tracer and meter providers (never the global ones), exported
over OTLP/HTTP, or to the exporter/reader a test passes in. Imported only when configured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import Counter, Histogram, UpDownCounter
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from .observability import ObservabilitySettings


def resource_for(settings: ObservabilitySettings) -> Resource:
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
        settings: ObservabilitySettings,
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

    def start_span(self, name: str, parent: trace.Span | None, attributes: Mapping[str, Any]) -> trace.Span:
        context = trace.set_span_in_context(parent) if parent is not None else None
        clean = {k: v for k, v in attributes.items() if v is not None}
        return self.tracer.start_span(name, context=context, attributes=clean)

    def add(self, name: str, amount: float, attributes: Mapping[str, str], up_down: bool = False) -> None:
        instrument = self._instruments.get(name)
        if instrument is None:
            make = self.meter.create_up_down_counter if up_down else self.meter.create_counter
            instrument = self._instruments[name] = make(name)
        assert not isinstance(instrument, Histogram)
        instrument.add(amount, attributes or None)

    def record(self, name: str, value: float, attributes: Mapping[str, str]) -> None:
        instrument = self._instruments.get(name)
        if instrument is None:
            instrument = self._instruments[name] = self.meter.create_histogram(name)
        assert isinstance(instrument, Histogram)
        instrument.record(value, attributes or None)

    def shutdown(self) -> None:
        """Flush what is pending and stop both providers."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
