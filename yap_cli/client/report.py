"""How the `yap client` commands summarize and print latencies: the seed's LATENCY SUMMARY (multi-turn
clients: the first turn apart, avg/p50/p90/p95 over turns 2+) and the bench table (p50/p95 under load)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from yap_server.stats import percentiles

from .core import TurnResult

LATENCIES = ("ttfb_ms", "first3_ms", "sentence_ms")
LABELS = {"ttfb_ms": "TTFB", "first3_ms": "3-WORDS", "sentence_ms": "SENTENCE"}
BENCH_METRICS = ("toolcall_ms", "ttfb_ms", "first3_ms", "sentence_ms")


def summarize(values: list[float]) -> dict[str, float | None]:
    """avg/p50/p90/p95 of a list of milliseconds (None when empty)."""
    average = round(statistics.fmean(values), 2) if values else None
    return {"avg": average, **percentiles(values, (50, 90, 95), digits=2)}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def latency_summary(turns: Sequence[TurnResult]) -> dict[str, Any]:
    """The FIRST turn's latencies, and avg/p50/p90/p95 (with n) of each over the turns after it."""
    rest = turns[1:]
    report: dict[str, Any] = {"FIRST": {m: getattr(turns[0], m) for m in LATENCIES} if turns else {}}
    for metric in LATENCIES:
        values = [v for t in rest if (v := getattr(t, metric)) is not None]
        report[metric] = {**summarize(values), "n": len(values)}
    return report


def print_latency_summary(report: dict[str, Any]) -> None:
    """The seed's LATENCY SUMMARY block."""

    def cell(value: float | None) -> str:
        return f"{'-':>6}  " if value is None else f"{value:6.0f}ms"

    first = report["FIRST"]
    print("─────────────[ LATENCY SUMMARY ]─────────────")
    print(
        "  FIRST  (includes prefill)  "
        + "  ".join(
            f"{name}={'-' if first.get(m) is None else f'{first[m]:.0f}ms'}"
            for name, m in zip(("ttfb", "3w", "sent"), LATENCIES, strict=True)
        )
    )
    for metric in LATENCIES:
        row = report[metric]
        stats = "  ".join(f"{stat}={cell(row[stat])}" for stat in ("avg", "p50", "p90", "p95"))
        print(f"  {LABELS[metric]:>8}  {stats}  (n={row['n']})")


def bench_summary(results: Sequence[TurnResult]) -> dict[str, Any]:
    """p50/p95 (with n) of toolcall, first token, first 3 words and first sentence over turns that ended `done`."""
    ok = [r for r in results if r.outcome == "done"]
    report: dict[str, Any] = {}
    for metric in BENCH_METRICS:
        values = [v for r in ok if (v := getattr(r, metric)) is not None]
        stats = summarize(values)
        report[metric] = {"p50": stats["p50"], "p95": stats["p95"], "n": len(values)}
    return report


def print_bench_summary(summary: dict[str, Any], title: str | None = None) -> None:
    """The bench table: one line per metric with p50 and p95."""
    if title:
        print(f"[{title}]")
    for metric in BENCH_METRICS:
        row = summary[metric]
        print(f"{metric:12} p50 {ms(row['p50']):>12}  p95 {ms(row['p95']):>12}  (n={row['n']})")


def say(args: Any, *parts: Any, **options: Any) -> None:
    """Print the human-readable output of a command (nothing with `--json`, which prints only the report)."""
    if not getattr(args, "json", False):
        print(*parts, **options)
