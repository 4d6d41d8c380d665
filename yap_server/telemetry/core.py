"""Telemetry: Prometheus metrics on `/metrics`, and optionally OpenTelemetry, Sentry and JSON logs.

`Telemetry.build(settings, api_keys)` makes one per app (it lives in lifespan state as
`"telemetry"`). The server reports through small methods: `connection_opened()` gives a
`ConnectionTelemetry`, whose `turn()` gives a `TurnTelemetry`. Yap's own metrics go to a per-app
`CollectorRegistry`; `/metrics` appends prometheus_client's global `REGISTRY` (where vLLM records
its engine metrics). OpenTelemetry (`telemetry.otel`) and Sentry (`telemetry.sentry`) are imported
only when configured; unconfigured, they cost nothing.

Metric names (Prometheus). OpenTelemetry exports the same measurements under the seed's names, units
and dimension keys (`text_inference.ttft` ..., `status`, `error.type`, `gpu.device.id`): the table is
`otel.INSTRUMENTS`, the mapping is in README "Observability".

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
    yap_rate_limit_violations_total{kind}  counter    messages / cancels / prompt_updates refused, and key quota
                                                      refusals (requests/tokens/daily_tokens/sessions/...)
    yap_cancel_to_free_seconds             histogram  barge-in: cancel until the work stopped (slot free)
    yap_http_requests_total{route,code}    counter    requests by mounted route and status (101: WS accepted)
    yap_prompt_cached_tokens_total         counter    prompt tokens the engine served from its prefix cache
    yap_key_requests_total{key_id,outcome} counter    per API key id (never the secret): admitted / refused
    yap_key_refusals_total{key_id,kind}    counter    per key id and the limit that refused
    yap_key_tokens_total{key_id,kind}      counter    per key id: prompt / completion tokens used
    yap_limits_backend_failures_total{mode} counter   rate-limit store (Redis) calls that failed (open/closed)
    yap_tool_classifications_total{status} counter    tool decisions (yes/no)
    yap_cache_resets_total                 counter    prefix-cache resets
    yap_warms_total{event,kind}            counter    prompt warms: started/completed/superseded/cancelled/error,
                                                      skipped (added no whole cache block: never reached the
                                                      engine), by what started them (prefill/start/turn)
    yap_warm_tokens_total                  counter    prompt tokens of completed warms
    yap_prompt_cached_share                histogram  share of each /ws turn's prompt served from the prefix cache
    yap_active_connections                 gauge
    yap_active_generations                 gauge
    yap_gpu_memory_{used,free,total}_bytes{gpu}, yap_gpu_utilization_percent{gpu}   NVML, when present
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram
from starlette.requests import Request
from starlette.responses import Response

from ..auth import authenticate, unauthorized
from .prometheus import PROMETHEUS_CONTENT_TYPE, PrometheusMetrics
from .recent import RecentValues
from .settings import TelemetrySettings

if TYPE_CHECKING:
    from .otel import OtelTelemetry
    from .sentry import SentryReporter


class Telemetry:
    """Everything the server reports to, for one app. Build it with `Telemetry.build`."""

    def __init__(
        self,
        settings: TelemetrySettings,
        otel: OtelTelemetry | None = None,
        sentry: SentryReporter | None = None,
    ) -> None:
        self.settings = settings
        self.prom = PrometheusMetrics(gpu=settings.gpu_metrics)
        self.otel = otel
        self.sentry = sentry
        self.active_generations = 0  # the one count: /status reads it, the gauge samples it
        # the last 10 minutes of raw latencies, for the dashboard's percentiles (`stats.percentiles`)
        self.recent = {name: RecentValues() for name in ("ttft", "itl", "tool", "cancel")}
        self.prom.active_generations.set_function(lambda: self.active_generations)

    @classmethod
    def build(
        cls,
        settings: TelemetrySettings | None = None,
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
        settings = settings or TelemetrySettings.from_env()
        otel = sentry = None
        if settings.otlp_target() is not None or span_exporter is not None or metric_reader is not None:
            from .otel import OtelTelemetry

            otel = OtelTelemetry(settings, span_exporter=span_exporter, metric_reader=metric_reader)
        if settings.sentry_dsn is not None:
            from .sentry import SentryReporter

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
            self.otel.add("text_inference.active_generations", change, {}, up_down=True)

    def started_up(self, seconds: float) -> None:
        self._observe(self.prom.startup, "text_inference.startup_duration", seconds)

    def rejected(self, reason: str) -> None:
        """A connection refused before it was served (`auth`, `capacity`)."""
        self._count(self.prom.rejected, "text_inference.connections_rejected_total", reason=reason)

    def slot_waited(self, seconds: float) -> None:
        self._observe(self.prom.slot_wait, "text_inference.connection_semaphore_wait", seconds)

    def rate_limited(self, kind: str) -> None:
        self._count(self.prom.rate_limited, "text_inference.rate_limit_violations_total", kind=kind)

    def key_admitted(self, key_id: str) -> None:
        """A request of key `key_id` passed its quota (usage per key: never the secret, only its id)."""
        self.prom.key_requests.labels(key_id=key_id, outcome="admitted").inc()

    def key_refused(self, key_id: str, kind: str) -> None:
        """Key `key_id`'s quota refused a request or session (`kind`: requests, tokens, daily_tokens, sessions,
        limits_unavailable); counted per key and with the other rate-limit refusals."""
        self.prom.key_requests.labels(key_id=key_id, outcome="refused").inc()
        self.prom.key_refusals.labels(key_id=key_id, kind=kind).inc()
        self.rate_limited(kind)

    def key_tokens(self, key_id: str, prompt: int, completion: int) -> None:
        self.prom.key_tokens.labels(key_id=key_id, kind="prompt").inc(prompt)
        self.prom.key_tokens.labels(key_id=key_id, kind="completion").inc(completion)

    def limits_backend_failed(self, mode: str) -> None:
        """A call to the rate-limit store failed; `mode` is what the server did (`open` or `closed`)."""
        self._count(self.prom.limits_failures, "text_inference.limits_backend_failures_total", mode=mode)

    def idle_disconnect(self) -> None:
        self._count(self.prom.idle, "text_inference.timeout_disconnects_total")

    def cancelled(self, reason: str) -> None:
        self._count(self.prom.cancellations, "text_inference.cancellation_total", reason=reason)

    def error(self, code: str) -> None:
        self._count(self.prom.errors, "text_inference.errors_total", type=code)

    def cache_reset(self) -> None:
        self._count(self.prom.cache_resets, "text_inference.cache_resets_total")

    def warm_started(self, kind: str) -> None:
        self._count(self.prom.warms, "text_inference.warms_total", event="started", kind=kind)

    def warm_ended(self, kind: str, event: str, prompt_tokens: int = 0) -> None:
        """A warm ended: `completed` (with its prompt tokens), `superseded`, `cancelled` or `error`; or was
        `skipped` without starting (it added no whole cache block)."""
        self._count(self.prom.warms, "text_inference.warms_total", event=event, kind=kind)
        if prompt_tokens:
            self._count(self.prom.warm_tokens, "text_inference.warm_tokens_total", prompt_tokens)

    def prompt_cached(self, prompt_tokens: int, cached_tokens: int) -> None:
        """A /ws turn's prompt: the share of it the prefix cache served."""
        if prompt_tokens > 0:
            self._observe(
                self.prom.prompt_cached_share, "text_inference.prompt_cached_share", cached_tokens / prompt_tokens
            )

    def tool_classified(self, status: str, latency_s: float) -> None:
        self._count(self.prom.tool, "text_inference.tool_classifications_total", status=status)
        self._observe(self.prom.tool_latency, "text_inference.tool_classification_latency", latency_s)
        self.recent["tool"].add(latency_s)

    def cancel_stopped(self, seconds: float) -> None:
        """A cancel (barge-in, `cancel`, disconnect) took `seconds` until its work had stopped and freed its slot."""
        self._observe(self.prom.cancel_to_free, "text_inference.cancel_to_free", seconds)
        self.recent["cancel"].add(seconds)

    def http_request(self, route: str, code: int) -> None:
        self.prom.http_requests.labels(route=route, code=str(code)).inc()

    def report_exception(self, exc: BaseException, user_text: Sequence[str] = (), **tags: str | None) -> None:
        """Send `exc` to Sentry (when configured) tagged with ids; `user_text` is scrubbed unless allowed."""
        if self.sentry is not None:
            self.sentry.capture(exc, {k: v for k, v in tags.items() if v is not None}, user_text)

    def connection_opened(self, client_id: str | None = None) -> ConnectionTelemetry:
        return ConnectionTelemetry(self, client_id)

    # -- the endpoint and shutdown -------------------------------------------------------------
    def metrics_response(self, request: Request) -> Response:
        """`GET /metrics`: Prometheus text; the API key is required unless `METRICS_PUBLIC=1`."""
        if not self.settings.metrics_public and authenticate(request) is None:
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
        telemetry._gauge(telemetry.prom.active_connections, "text_inference.active_connections", 1)

    def session_started(self, session_id: str) -> None:
        """A `start` frame began a session (replacing any earlier one on this connection)."""
        if self.session_id is not None:
            self._session_ended()
        self.session_id = session_id
        self.telemetry.prom.churn.labels(event="started").inc()  # OpenTelemetry counts completed sessions only
        if self.span is not None:
            self.span.set_attribute("yap.session_id", session_id)

    def _session_ended(self) -> None:
        t = self.telemetry
        t.prom.churn.labels(event="ended").inc()
        if t.otel is not None:
            t.otel.add("text_inference.session_churn_total", 1, {})
        t._observe(t.prom.generations_per_session, "text_inference.generations_per_session", self.generations)
        self.generations = 0

    def turn(self, request_id: str) -> TurnTelemetry:
        self.generations += 1
        return TurnTelemetry(self, request_id)

    def closed(self) -> None:
        t = self.telemetry
        if self.session_id is not None:
            self._session_ended()
        t._gauge(t.prom.active_connections, "text_inference.active_connections", -1)
        t._observe(t.prom.connection_duration, "text_inference.connection_duration", time.perf_counter() - self.opened)
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
            self.telemetry.recent["itl"].add(gap)
            self._gaps += 1
            self._gap_total += gap
        self._last_delta = now

    def first_token(self, ttft_s: float) -> None:
        self.telemetry._observe(self.telemetry.prom.ttft, "text_inference.ttft", ttft_s)
        self.telemetry.recent["ttft"].add(ttft_s)

    def generation_ended(self, usage: Any) -> None:
        """The engine stream closed; `usage` (prompt/completion tokens) when it finished."""
        t = self.telemetry
        t._generations(-1)
        if usage is not None:
            t._count(t.prom.tokens, "text_inference.tokens_generated_total", usage.completion_tokens)
            t._count(t.prom.prompt_tokens_total, "text_inference.prompt_tokens_total", usage.prompt_tokens)
            if usage.cached_tokens:
                t.prom.cached_tokens.inc(usage.cached_tokens)
            t._observe(t.prom.completion_tokens, "text_inference.completion_tokens", usage.completion_tokens)
            t._observe(t.prom.prompt_tokens, "text_inference.prompt_tokens", usage.prompt_tokens)
        if t.otel is not None and self._gaps:
            t.otel.record("text_inference.token_latency", self._gap_total / self._gaps, {})
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
        t._count(t.prom.requests, "text_inference.requests_total", status=status)
        t._observe(
            t.prom.request_duration, "text_inference.request_latency", time.perf_counter() - self.started, status=status
        )
        if error_code is not None:
            t.error(error_code)
        if self.span is not None:
            self.span.set_attribute("yap.status", status)
            if error_code is not None:
                self.span.set_attribute("yap.error_code", error_code)
            self.span.end()
