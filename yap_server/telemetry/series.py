"""The dashboard's 10-minute series (`History`), sampled from the same counters `/metrics` exports, the
helpers that read those counters and the engine's own gauges, and the stats body built from them once
per tick (`StatsBody`)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY

from ..stats import percentiles

if TYPE_CHECKING:
    from .core import Telemetry

HISTORY_S = 600.0  # the charts' span: the last 10 minutes
SAMPLE_EVERY_S = 2.0
# What an engine exports to the global registry, where it does (vLLM): the queue, the KV cache, prefix hits.
ENGINE_GAUGES = {
    "queue_waiting": ("vllm:num_requests_waiting",),
    "running": ("vllm:num_requests_running",),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "prefix_cache_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    "prefix_cache_queries": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
}


# -- reading the counters /metrics exports ---------------------------------------------------------


def counter_values(metric: Any, label: str | None = None) -> dict[str, float]:
    """A counter's `_total` samples by the value of `label` (one entry `""` when unlabelled)."""
    values: dict[str, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                name = sample.labels.get(label, "") if label else ""
                values[name] = values.get(name, 0.0) + sample.value
    return values


def labelled(metric: Any, labels: Iterable[str]) -> list[dict[str, Any]]:
    """A labelled counter's `_total` samples as rows `{label: value, ..., "count": n}`."""
    names = list(labels)
    rows = []
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                rows.append({**{n: sample.labels.get(n, "") for n in names}, "count": sample.value})
    return rows


def engine_readings() -> dict[str, float | None]:
    """The engine's own gauges where it reports them to the global registry (vLLM), else None each."""
    wanted = {name: kind for kind, names in ENGINE_GAUGES.items() for name in names}
    found: dict[str, float | None] = dict.fromkeys(ENGINE_GAUGES)
    for family in REGISTRY.collect():
        for sample in family.samples:
            kind = wanted.get(sample.name)
            if kind is not None:
                found[kind] = (found[kind] or 0.0) + sample.value
    return found


@dataclass
class History:
    """The dashboard's 10-minute series, one point every `SAMPLE_EVERY_S`: rates from the counters' growth
    since the previous point, levels as they were, and the engine's own gauges (read here, not per request)."""

    points: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=int(HISTORY_S / SAMPLE_EVERY_S)))
    engine: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(ENGINE_GAUGES))
    _last: tuple[float, dict[str, float]] | None = None

    def sample(self, telemetry: Telemetry, connections: int, now: float | None = None) -> None:
        """Add a point: counters' growth since the last one, `connections` open now, recent percentiles."""
        now = time.time() if now is None else now
        prom = telemetry.prom
        totals = {
            "tokens": sum(counter_values(prom.tokens).values()),
            "requests": sum(counter_values(prom.requests).values()),
            "errors": sum(counter_values(prom.errors).values()),
            "refusals": sum(counter_values(prom.rate_limited).values()) + sum(counter_values(prom.rejected).values()),
        }
        self.engine = engine_readings()
        if self._last is not None:
            then, before = self._last
            span = max(now - then, 1e-6)
            recent = telemetry.recent
            self.points.append(
                {
                    "t": round(now, 3),
                    **{f"{name}_per_s": round((totals[name] - before[name]) / span, 3) for name in totals},
                    "connections": connections,
                    "generations": telemetry.active_generations,
                    "ttft_p95_s": percentiles(recent["ttft"].values(span), (95,), digits=4)["p95"],
                    "itl_p95_s": percentiles(recent["itl"].values(span), (95,), digits=5)["p95"],
                }
            )
        self._last = (now, totals)


@dataclass
class StatsBody:
    """`/dashboard/stats`'s answer, computed and encoded once per tick while a page reads it, so that a
    request only sends bytes (percentiles over thousands of samples are not worked out per request).

    `taken_at` and `read_at` are `time.monotonic()` seconds: when `body` was built, and when it was last
    asked for (a body nobody asked for lately is not rebuilt). `lock` keeps two builds from overlapping."""

    body: bytes | None = None
    taken_at: float = -math.inf
    read_at: float = -math.inf
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def fresh(self, now: float, within_s: float) -> bool:
        """A body exists and was built within the last `within_s` seconds."""
        return self.body is not None and now - self.taken_at <= within_s

    def watched(self, now: float, within_s: float) -> bool:
        """Someone asked for the body within the last `within_s` seconds."""
        return now - self.read_at <= within_s
