"""Telemetry: `/metrics` moves with real traffic, OpenTelemetry spans and metrics (in memory and over
OTLP/HTTP to a local stub), Sentry events (rate-limited, scrubbed), JSON logs, and the benchmark."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import types
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from yap_cli.bench_telemetry import OtlpPost, otlp_sink
from yap_engines import ChatRequest, FakeEngine, FunctionEngine, InferenceEngine
from yap_server.app import create_app
from yap_server.telemetry import GpuCollector, JsonLogFormatter, Telemetry, TelemetrySettings

from .conftest import KEY, Probe, live_server, server_settings


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, keyed by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(origin: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(origin.replace("ws://", "http://") + "/metrics", headers=headers)


def frame(kind: str, rid: str, **payload: Any) -> str:
    return json.dumps({"type": kind, "session_id": "s1", "request_id": rid, "payload": payload})


async def until(ws: Any, *kinds: str) -> dict[str, Any]:
    while True:
        message = json.loads(await ws.recv())
        if message["type"] in kinds:
            return message


# -- Prometheus over a real socket ---------------------------------------------------------------


async def test_metrics_move_with_a_turn_a_cancel_and_rejected_connections() -> None:
    engine = FakeEngine(text="one two three four five six seven eight nine ten " * 5, tokens_per_s=100)
    async with live_server(engine, max_concurrent_connections=1, ws_handshake_acquire_timeout_s=0.05) as origin:
        async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:
            await ws.send(frame("start", "s", chat_prompt="Be brief."))
            await until(ws, "ack")
            await ws.send(frame("message", "t1", user_utterance="hello", sampling={"max_tokens": 4}))
            assert (await until(ws, "done", "cancelled", "error"))["type"] == "done"
            await ws.send(frame("message", "t2", user_utterance="talk on"))
            await until(ws, "token")
            await ws.send(frame("cancel", "t2"))
            assert (await until(ws, "done", "cancelled", "error"))["type"] == "cancelled"

            async with websockets.connect(f"{origin}/ws?api_key={KEY}") as second:  # the only slot is taken
                assert json.loads(await second.recv())["payload"]["code"] == "server_at_capacity"
            during = samples((await scrape(origin, **{"X-API-Key": KEY})).text)
        async with websockets.connect(f"{origin}/ws?api_key=wrong") as refused:
            assert json.loads(await refused.recv())["payload"]["code"] == "authentication_failed"
        await asyncio.sleep(0.1)  # let the first connection's close be accounted
        after = samples((await scrape(origin, Authorization=f"Bearer {KEY}")).text)

    assert value(during, "yap_active_connections") == 1
    assert value(after, "yap_active_connections") == 0
    assert value(after, "yap_active_generations") == 0
    assert value(after, "yap_requests_total", status="done") == 1
    assert value(after, "yap_requests_total", status="cancelled") == 1
    assert value(after, "yap_cancellations_total", reason="client_request") == 1
    assert value(after, "yap_connections_rejected_total", reason="capacity") == 1
    assert value(after, "yap_connections_rejected_total", reason="auth") == 1
    assert value(after, "yap_time_to_first_token_seconds_count") == 2
    assert value(after, "yap_generation_tokens_total") >= 4
    assert value(after, "yap_prompt_tokens_total") > 0
    assert value(after, "yap_request_completion_tokens_count") == 1  # a cancelled generation reports no usage
    assert value(after, "yap_inter_token_latency_seconds_count") > 0
    assert value(after, "yap_request_duration_seconds_count", status="done") == 1
    assert value(after, "yap_connection_duration_seconds_count") == 1
    assert value(after, "yap_connection_slot_wait_seconds_count") == 1
    assert value(after, "yap_session_churn_total", event="started") == 1
    assert value(after, "yap_session_churn_total", event="ended") == 1
    assert value(after, "yap_generations_per_session_sum") == 2
    assert value(after, "yap_startup_duration_seconds_count") == 1
    assert any(name.startswith("python_") or name.startswith("process_") for name, _ in after)  # the global REGISTRY


async def test_idle_disconnects_and_rate_limits_are_counted() -> None:
    async with live_server(FakeEngine(seed=1), ws_idle_timeout_s=0.3, ws_max_messages_per_window=1) as origin:
        async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:
            await ws.send(frame("start", "s", chat_prompt="Be brief."))
            await until(ws, "ack")
            await ws.send(frame("start", "s2", chat_prompt="Be brief."))
            assert (await until(ws, "error"))["payload"]["code"] == "rate_limited"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
        await asyncio.sleep(0.1)
        found = samples((await scrape(origin, **{"X-API-Key": KEY})).text)
    assert value(found, "yap_idle_disconnects_total") == 1
    assert value(found, "yap_rate_limit_violations_total", kind="messages") == 1
    assert value(found, "yap_errors_total", type="rate_limited") == 1


def test_metrics_needs_the_key_unless_public() -> None:
    engines = {"chat": FakeEngine(seed=1)}
    with TestClient(create_app(server_settings(), engines=engines)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics?api_key=wrong").status_code == 401
        shown = client.get(f"/metrics?api_key={KEY}")
        assert shown.status_code == 200 and "yap_requests_total" in shown.text
    public = Telemetry.build(TelemetrySettings(metrics_public=True))
    with TestClient(create_app(server_settings(), engines=engines, telemetry=public)) as client:
        assert client.get("/metrics").status_code == 200


def test_several_apps_in_one_process_keep_their_own_metrics() -> None:
    first, second = Telemetry.build(TelemetrySettings()), Telemetry.build(TelemetrySettings())
    first.rejected("auth")
    assert value(samples(first.prom.exposition().decode()), "yap_connections_rejected_total", reason="auth") == 1
    assert value(samples(second.prom.exposition().decode()), "yap_connections_rejected_total", reason="auth") == 0


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


@pytest.mark.skipif(_nvml_works(), reason="this machine has a GPU that NVML can see")
def test_gpu_gauges_are_absent_without_a_gpu() -> None:
    assert list(GpuCollector().collect()) == []
    exposition = Telemetry.build(TelemetrySettings()).prom.exposition().decode()
    assert "yap_gpu_" not in exposition


def fake_nvml_with_two_gpus() -> Any:
    """A stand-in for `pynvml`: two devices with 3 of 8 bytes used, 40 % and 41 % busy."""
    memory = types.SimpleNamespace(used=3.0, free=5.0, total=8.0)
    return types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetMemoryInfo=lambda handle: memory,
        nvmlDeviceGetUtilizationRates=lambda handle: types.SimpleNamespace(gpu=40 + handle),
    )


def test_gpu_gauges_report_each_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml_with_two_gpus())
    found = samples(Telemetry.build(TelemetrySettings()).prom.exposition().decode())
    assert value(found, "yap_gpu_memory_used_bytes", gpu="1") == 3.0
    assert value(found, "yap_gpu_memory_total_bytes", gpu="0") == 8.0
    assert value(found, "yap_gpu_utilization_percent", gpu="1") == 41.0


# -- OpenTelemetry -------------------------------------------------------------------------------


def run_turns(telemetry: Telemetry, engine: InferenceEngine, *utterances: str) -> list[dict[str, Any]]:
    """One session on an in-process app with `telemetry`; one turn per utterance; every frame."""
    app = create_app(server_settings(), engines={"chat": engine}, telemetry=telemetry)
    with TestClient(app) as client, client.websocket_connect(f"/ws?api_key={KEY}&client_id=kiosk-7") as ws:
        probe = Probe(ws)
        probe.start()
        for i, text in enumerate(utterances):
            probe.send("message", {"user_utterance": text}, rid=f"t{i}", turn=True)
            probe.until_terminal(f"t{i}")
        probe.check()
        return probe.frames


def test_spans_nest_session_request_generation_and_metrics_are_recorded() -> None:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    telemetry = Telemetry.build(TelemetrySettings(), span_exporter=spans, metric_reader=reader)
    run_turns(telemetry, FakeEngine(seed=1), "hello there")

    by_name = {span.name: span for span in spans.get_finished_spans()}
    session, request, generation = by_name["yap.session"], by_name["yap.request"], by_name["yap.generation"]
    assert request.parent is not None and request.parent.span_id == session.context.span_id
    assert generation.parent is not None and generation.parent.span_id == request.context.span_id
    assert session.attributes is not None and session.attributes["yap.client_id"] == "kiosk-7"
    assert request.attributes is not None and request.attributes["yap.status"] == "done"
    assert generation.attributes is not None and generation.attributes["gen_ai.usage.output_tokens"] > 0

    data = reader.get_metrics_data()
    assert data is not None
    points = {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert [p.attributes for p in points["text_inference.requests_total"]] == [{"status": "done"}]
    assert points["text_inference.ttft"][0].count == 1
    telemetry.shutdown()


def test_traces_and_metrics_are_exported_over_otlp_http_with_the_axiom_headers() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    posts: list[OtlpPost] = []
    with otlp_sink(posts) as url:
        settings = TelemetrySettings(
            otlp_endpoint=url,
            axiom_api_token="axiom-token",
            axiom_dataset="yap-traces",
            service_name="yap-test",
            environment="ci",
        )
        telemetry = Telemetry.build(settings)
        run_turns(telemetry, FakeEngine(seed=1), "hello")
        telemetry.shutdown()  # flushes the batch and the last metrics

    traces = [(headers, body) for path, headers, body in posts if path == "/v1/traces"]
    assert traces, [path for path, _, _ in posts]
    headers = {k.lower(): v for k, v in traces[0][0].items()}
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["authorization"] == "Bearer axiom-token"
    assert headers["x-axiom-dataset"] == "yap-traces"
    exported = ExportTraceServiceRequest.FromString(traces[0][1])
    names = {span.name for rs in exported.resource_spans for ss in rs.scope_spans for span in ss.spans}
    assert {"yap.session", "yap.request", "yap.generation"} <= names
    resource = {a.key: a.value.string_value for a in exported.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "yap-test" and resource["deployment.environment"] == "ci"
    assert any(path == "/v1/metrics" for path, _, _ in posts)


def otlp_metrics(posts: list[OtlpPost]) -> tuple[dict[str, Any], dict[str, str]]:
    """The metrics of every `/v1/metrics` POST, decoded from protobuf: name -> the last export of that
    metric (its unit, kind and data points), and the resource attributes."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    metrics: dict[str, Any] = {}
    resource: dict[str, str] = {}
    for path, headers, body in posts:
        if path != "/v1/metrics":
            continue
        assert {k.lower(): v for k, v in headers.items()}["content-type"] == "application/x-protobuf"
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
            resource = {a.key: a.value.string_value for a in rm.resource.attributes}
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    metrics[metric.name] = metric
    return metrics, resource


def point_attributes(metric: Any) -> list[dict[str, str]]:
    points = getattr(metric, metric.WhichOneof("data")).data_points
    return [{a.key: a.value.string_value for a in p.attributes} for p in points]


SEED_INSTRUMENTS = {  # seed 001 "Metrics Reference": name -> (unit, OTLP data kind)
    "text_inference.ttft": ("s", "histogram"),
    "text_inference.request_latency": ("s", "histogram"),
    "text_inference.token_latency": ("s", "histogram"),
    "text_inference.connection_duration": ("s", "histogram"),
    "text_inference.connection_semaphore_wait": ("s", "histogram"),
    "text_inference.prompt_tokens": ("{token}", "histogram"),
    "text_inference.completion_tokens": ("{token}", "histogram"),
    "text_inference.generations_per_session": ("{request}", "histogram"),
    "text_inference.startup_duration": ("s", "histogram"),
    "text_inference.tool_classification_latency": ("s", "histogram"),
    "text_inference.requests_total": ("{request}", "sum"),
    "text_inference.tokens_generated_total": ("{token}", "sum"),
    "text_inference.prompt_tokens_total": ("{token}", "sum"),
    "text_inference.connections_rejected_total": ("{connection}", "sum"),
    "text_inference.session_churn_total": ("{session}", "sum"),
    "text_inference.cancellation_total": ("{request}", "sum"),
    "text_inference.errors_total": ("{error}", "sum"),
    "text_inference.timeout_disconnects_total": ("{connection}", "sum"),
    "text_inference.rate_limit_violations_total": ("{violation}", "sum"),
    "text_inference.tool_classifications_total": ("{classification}", "sum"),
    "text_inference.cache_resets_total": ("{reset}", "sum"),
    "text_inference.active_connections": ("{connection}", "sum"),
    "text_inference.active_generations": ("{generation}", "sum"),
    "text_inference.gpu.memory_used": ("By", "gauge"),
    "text_inference.gpu.memory_free": ("By", "gauge"),
    "text_inference.gpu.memory_total": ("By", "gauge"),
    "text_inference.gpu.utilization": ("%", "gauge"),
}


YAP_INSTRUMENTS = {  # beyond the seed's: prompt warms and the prefix cache's share of each turn's prompt
    "text_inference.warms_total": ("{warm}", "sum"),
    "text_inference.warm_tokens_total": ("{token}", "sum"),
    "text_inference.prompt_cached_share": ("1", "histogram"),
}


def test_a_local_otlp_collector_receives_the_seed_instruments_units_and_dimensions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml_with_two_gpus())
    posts: list[OtlpPost] = []
    with otlp_sink(posts) as url:
        telemetry = Telemetry.build(TelemetrySettings(otlp_endpoint=url))
        run_turns(telemetry, FakeEngine(seed=1), "hello", "again")
        telemetry.warm_ended("prefill", "completed", 130)  # the start's short persona fills no block: skipped
        telemetry.rejected("capacity")
        telemetry.rate_limited("messages")
        telemetry.cancelled("client_request")
        telemetry.error("rate_limited")
        telemetry.idle_disconnect()
        telemetry.cache_reset()
        telemetry.tool_classified("yes", 0.01)
        telemetry.slot_waited(0.0)
        telemetry.shutdown()  # exports the last metrics

    metrics, resource = otlp_metrics(posts)
    assert resource["service.name"] == "yap-text-inference-api"
    assert resource["deployment.environment"] == "production"
    expected = {**SEED_INSTRUMENTS, **YAP_INSTRUMENTS}
    assert sorted(metrics) == sorted(expected), "exactly the seed's 27 instruments and Yap's own"
    for name, (unit, kind) in expected.items():
        assert (metrics[name].unit, metrics[name].WhichOneof("data")) == (unit, kind), name
    assert point_attributes(metrics["text_inference.requests_total"]) == [{"status": "done"}]
    assert point_attributes(metrics["text_inference.errors_total"]) == [{"error.type": "rate_limited"}]
    for name in ("text_inference.gpu.memory_used", "text_inference.gpu.utilization"):
        assert sorted(p["gpu.device.id"] for p in point_attributes(metrics[name])) == ["0", "1"]
    busy = metrics["text_inference.gpu.utilization"].gauge.data_points
    assert sorted(p.as_double for p in busy) == [40.0, 41.0]
    assert metrics["text_inference.session_churn_total"].sum.data_points[0].as_int == 1  # completed sessions
    assert not any(name.startswith("yap_") for name in metrics)


def test_gpu_observables_are_empty_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: no NVML on this machine
    reader = InMemoryMetricReader()
    telemetry = Telemetry.build(TelemetrySettings(), metric_reader=reader)
    telemetry.rejected("auth")
    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert "text_inference.connections_rejected_total" in names
    assert not any(name.startswith("text_inference.gpu.") for name in names)
    telemetry.shutdown()


def test_the_seed_telemetry_defaults() -> None:
    settings = TelemetrySettings()
    assert settings.service_name == "yap-text-inference-api"
    assert settings.axiom_dataset == "text-inference-api"
    assert settings.environment == "production"
    assert (settings.metrics_export_interval_ms, settings.traces_export_interval_ms) == (15000, 5000)


def test_axiom_environment_is_the_deployment_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AXIOM_ENVIRONMENT", "staging")
    assert TelemetrySettings().environment == "staging"
    monkeypatch.setenv("DEPLOYMENT_ENVIRONMENT", "canary")  # Yap's name wins over the seed alias
    assert TelemetrySettings().environment == "canary"


def test_axiom_alone_fills_the_endpoint_and_nothing_configured_means_no_otel() -> None:
    target = TelemetrySettings(axiom_api_token="t", axiom_dataset="d").otlp_target()
    assert target == ("https://api.axiom.co", {"Authorization": "Bearer t", "X-Axiom-Dataset": "d"})
    seed_default = TelemetrySettings(axiom_api_token="t").otlp_target()  # AXIOM_API_TOKEN alone
    assert seed_default == (
        "https://api.axiom.co",
        {"Authorization": "Bearer t", "X-Axiom-Dataset": "text-inference-api"},
    )
    assert TelemetrySettings().otlp_target() is None
    plain = Telemetry.build(TelemetrySettings())
    assert plain.otel is None and plain.sentry is None


# -- Sentry --------------------------------------------------------------------------------------


def recording_transport() -> tuple[Any, list[dict[str, Any]]]:
    import sentry_sdk

    events: list[dict[str, Any]] = []

    class Recording(sentry_sdk.Transport):
        def capture_envelope(self, envelope: Any) -> None:
            for item in envelope.items:
                if item.type == "event":
                    events.append(json.loads(item.get_bytes()))

    return Recording(), events


SECRET_UTTERANCE = "my bank password is hunter2"


def failing_engine() -> FunctionEngine:
    async def pieces(request: ChatRequest) -> AsyncIterator[str]:
        yield "Sure"
        raise RuntimeError(f"backend choked on {SECRET_UTTERANCE!r} (key {KEY})")

    return FunctionEngine(pieces)


def test_errors_reach_sentry_once_per_class_tagged_and_scrubbed() -> None:
    transport, events = recording_transport()
    settings = TelemetrySettings(sentry_dsn="https://public@sentry.invalid/1", sentry_environment="ci")
    telemetry = Telemetry.build(settings, [KEY], sentry_transport=transport)
    frames = run_turns(telemetry, failing_engine(), SECRET_UTTERANCE, SECRET_UTTERANCE)
    telemetry.shutdown()

    assert [f["payload"]["code"] for f in frames if f["type"] == "error"] == ["internal_error", "internal_error"]
    assert len(events) == 1  # the second RuntimeError came within 10 s
    event = events[0]
    assert event["tags"] == {"session_id": "s1", "request_id": "t0", "client_id": "kiosk-7"}
    assert event["environment"] == "ci"
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    dumped = json.dumps(event)
    assert KEY not in dumped and "hunter2" not in dumped


def test_sentry_rate_limit_is_per_class_and_reopens_after_ten_seconds() -> None:
    from yap_server.telemetry.sentry import SentryReporter

    transport, events = recording_transport()
    now = [0.0]
    settings = TelemetrySettings(sentry_dsn="https://public@sentry.invalid/1")
    reporter = SentryReporter(settings, [KEY], transport=transport, clock=lambda: now[0])
    assert reporter.capture(ValueError("a"), {}) is not None
    assert reporter.capture(ValueError("b"), {}) is None
    assert reporter.capture(KeyError("c"), {}) is not None
    now[0] = 10.5
    assert reporter.capture(ValueError("d"), {}) is not None
    reporter.close()
    assert [e["exception"]["values"][-1]["type"] for e in events] == ["ValueError", "KeyError", "ValueError"]


def test_sentry_send_text_lets_user_text_through() -> None:
    from yap_server.telemetry.sentry import SentryReporter

    transport, events = recording_transport()
    settings = TelemetrySettings(sentry_dsn="https://public@sentry.invalid/1", sentry_send_text=True)
    reporter = SentryReporter(settings, [KEY], transport=transport)
    reporter.capture(RuntimeError(f"{SECRET_UTTERANCE} {KEY}"), {}, user_text=[SECRET_UTTERANCE])
    reporter.close()
    dumped = json.dumps(events)
    assert "hunter2" in dumped and KEY not in dumped


# -- logs and the benchmark ----------------------------------------------------------------------


def test_json_logs_carry_request_ids_and_never_a_key() -> None:
    record = logging.LogRecord("yap.ws", logging.ERROR, __file__, 1, "client sent %s", (KEY,), None)
    record.session_id, record.request_id = "s1", "r1"
    line = json.loads(JsonLogFormatter([KEY]).format(record))
    assert line["session_id"] == "s1" and line["request_id"] == "r1" and line["level"] == "error"
    assert KEY not in json.dumps(line)


async def test_the_telemetry_benchmark_reports_both_rates() -> None:
    from yap_cli.bench_telemetry import bench_telemetry

    report = await bench_telemetry(concurrency=2, tokens=20, rounds=1)
    assert report["off"]["tokens_per_s"] > 0 and report["on"]["tokens_per_s"] > 0
    assert "on_fraction_of_off" in report
