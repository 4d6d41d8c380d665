"""Yap's Prometheus metrics (one registry per app) and the NVML GPU collector."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
SESSION_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)
TOKEN_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
COUNT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200)
STARTUP_BUCKETS = (0.1, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class GpuReading:
    """One device's memory (bytes) and utilisation (percent), read from NVML."""

    index: int
    used: float
    free: float
    total: float
    utilization: float


def gpu_readings() -> list[GpuReading]:
    """Every device's reading from NVML; empty (never an error) without `pynvml`, a driver or a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        readings = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            busy = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            readings.append(GpuReading(index, float(memory.used), float(memory.free), float(memory.total), busy))
        return readings
    except Exception:
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


class GpuCollector(Collector):
    """GPU memory and utilisation per device from NVML; yields nothing without `pynvml` or a GPU."""

    def collect(self) -> Iterator[Metric]:
        readings = gpu_readings()
        if not readings:
            return
        families = {
            "used": GaugeMetricFamily("yap_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"]),
            "free": GaugeMetricFamily("yap_gpu_memory_free_bytes", "GPU memory free", labels=["gpu"]),
            "total": GaugeMetricFamily("yap_gpu_memory_total_bytes", "GPU memory in all", labels=["gpu"]),
            "utilization": GaugeMetricFamily("yap_gpu_utilization_percent", "GPU utilisation", labels=["gpu"]),
        }
        for reading in readings:
            for kind, family in families.items():
                family.add_metric([str(reading.index)], getattr(reading, kind))
        yield from families.values()


SHARE_BUCKETS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
REPLICA_COUNTERS = {
    "attempts": "requests sent to an engine replica (first tries, retries and continuations)",
    "retries": "turns retried on another replica before their first token",
    "migrations": "turns continued on another replica from the tokens already streamed",
    "lost": "turns no replica could save (they ended engine_error)",
    "marked_down": "times a replica was taken out (failed request or health check)",
}


class ReplicaCollector(Collector):
    """A replicated chat engine's counters, read from its `stats()` at each scrape."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for key, doc in REPLICA_COUNTERS.items():
            yield CounterMetricFamily(f"yap_engine_replica_{key}", doc, value=float(stats[key]))
        up = GaugeMetricFamily("yap_engine_replica_up", "1 while a replica is in service", labels=["replica"])
        held = GaugeMetricFamily("yap_engine_replica_sessions", "sessions kept on a replica", labels=["replica"])
        for name, ok in stats["up"].items():
            up.add_metric([name], 1.0 if ok else 0.0)
            held.add_metric([name], float(stats["sessions"].get(name, 0)))
        yield up
        yield held


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
        self.cancel_to_free = histogram(
            "yap_cancel_to_free_seconds", "barge-in: cancel until the work has stopped", LATENCY_BUCKETS
        )
        self.http_requests = Counter(
            "yap_http_requests", "requests by route and status code", ["route", "code"], registry=r
        )
        self.cached_tokens = Counter(
            "yap_prompt_cached_tokens", "prompt tokens served from the prefix cache", registry=r
        )
        self.key_requests = Counter("yap_key_requests", "requests per API key id", ["key_id", "outcome"], registry=r)
        self.key_refusals = Counter(
            "yap_key_refusals", "refusals per API key id and limit", ["key_id", "kind"], registry=r
        )
        self.key_tokens = Counter("yap_key_tokens", "tokens used per API key id", ["key_id", "kind"], registry=r)
        self.limits_failures = Counter(
            "yap_limits_backend_failures", "rate-limit store calls that failed", ["mode"], registry=r
        )
        self.warms = Counter("yap_warms", "prompt warms by event", ["event", "kind"], registry=r)
        self.warm_tokens = Counter("yap_warm_tokens", "prompt tokens of completed warms", registry=r)
        self.prompt_cached_share = histogram(
            "yap_prompt_cached_share", "share of a /ws turn's prompt served from the prefix cache", SHARE_BUCKETS
        )
        self.active_connections = Gauge("yap_active_connections", "open WebSocket connections", registry=r)
        self.active_generations = Gauge("yap_active_generations", "generations streaming", registry=r)
        if gpu:
            r.register(GpuCollector())

    def watch_replicas(self, stats: Callable[[], Mapping[str, Any]]) -> Callable[[], None]:
        """Export a replicated engine's counters; returns the call that stops it (at app shutdown)."""
        collector = ReplicaCollector(stats)
        self.registry.register(collector)
        return lambda: self.registry.unregister(collector)

    def exposition(self) -> bytes:
        """Yap's metrics, then the global registry's (engine metrics, e.g. vLLM's)."""
        return generate_latest(self.registry) + generate_latest(REGISTRY)
