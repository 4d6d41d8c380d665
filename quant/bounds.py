"""The quality bound of each quantized format, and the arithmetic that judges a quality report against it.

One bound per format, not one for all: an 8-bit format that quantizes activations cannot keep 95% of the
top-1 tokens of a 135M model whose weight-only INT8 build keeps 95.8%, while llama.cpp's 8-bit Q8_0 keeps
97.7% on an 8B model and llm-compressor gates FP8 / W8A8 on recovery, not on token agreement. Each bound
holds for float32 compute against the bf16 base (`yap quant eval`'s default), on the held-out text of
`quant.heldout`.

A format without a row here has no bound: `bound_for` raises instead of passing it. The round-to-nearest
4-bit builds are controls for AWQ (`AWQ_VS_RTN_KL`), not formats with a bound of their own.

Stdlib only: imported by the main process and by the evaluation runner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from .errors import QuantError

# Two-sided 95% normal quantile.
Z95 = 1.959963984540054
# Margin-conditioned top-1 counts only the positions where the base's two most likely tokens differ by at
# least this much probability (a near-tie flips on any rounding and says nothing about the format).
TOP1_MARGIN = 0.2
# AWQ's mean KL must be at most this fraction of round-to-nearest's, at the same group size and symmetry.
AWQ_VS_RTN_KL = 0.6
# Consistency: |mean KL - ln(perplexity ratio)| <= CONSISTENCY_REL * |ln ratio| + CONSISTENCY_ABS.
CONSISTENCY_REL = 0.3
CONSISTENCY_ABS = 0.005


class UnknownFormatError(QuantError):
    """A format with no quality bound: it cannot pass, so asking for its bound is an error."""


@dataclass(frozen=True)
class Bound:
    """The most a format may lose against the bf16 base: relative perplexity, mean KL, and the least top-1."""

    key: str
    label: str
    delta: float
    kl: float
    top1: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


BOUNDS: Mapping[str, Bound] = MappingProxyType(
    {
        b.key: b
        for b in (
            Bound("eval_floor", "evaluation floor: bf16 weights, bf16 compute against float32 compute",
                   0.002, 0.002, 0.985),
            Bound("int8_w8a16", "INT8 weight-only (W8A16)", 0.015, 0.015, 0.94),
            Bound("fp8_w8a16", "FP8 weight-only (W8A16, Ampere 8-bit)", 0.025, 0.025, 0.90),
            Bound("w8a8_int8", "W8A8-INT8, dynamic per-token activations (SmoothQuant)", 0.025, 0.025, 0.91),
            Bound("fp8_dynamic", "FP8 dynamic", 0.03, 0.03, 0.88),
            Bound("trt_fp8", "TRT fp8 (static per-tensor activations)", 0.04, 0.04, 0.86),
            Bound("trt_int8_sq", "TRT int8_sq (static per-tensor activations)", 0.08, 0.08, 0.85),
            Bound("awq_w4a16", "AWQ W4A16 (asymmetric, g64)", 0.25, 0.22, 0.74),
            Bound("trt_int4_awq", "TRT int4_awq (block size 128)", 0.30, 0.26, 0.70),
        )
    }
)  # fmt: skip

# (backend, plan method) -> bound key. Methods missing here (the round-to-nearest controls, nvfp4) have none.
METHOD_BOUNDS: Mapping[tuple[str, str], str] = MappingProxyType(
    {
        ("vllm", "fp8_w8a16"): "fp8_w8a16",
        ("vllm", "w8a8_int8"): "w8a8_int8",
        ("vllm", "fp8_dynamic"): "fp8_dynamic",
        ("vllm", "awq"): "awq_w4a16",
        ("trt", "int8_wo"): "int8_w8a16",
        ("trt", "fp8"): "trt_fp8",
        ("trt", "int8_sq"): "trt_int8_sq",
        ("trt", "int4_awq"): "trt_int4_awq",
    }
)


def bound_for(key: str) -> Bound:
    """The bound of a format key (`BOUNDS`); an unknown format is an error, never a pass."""
    bound = BOUNDS.get(key)
    if bound is None:
        raise UnknownFormatError(f"no quality bound for format {key!r}: bounds exist for {', '.join(BOUNDS)}")
    return bound


def bound_key(backend: str, method: str | None) -> str:
    """The bound key of a build's (backend, method); `UnknownFormatError` when it has none."""
    key = METHOD_BOUNDS.get((backend, method or ""))
    if key is None:
        raise UnknownFormatError(f"no quality bound for {backend} method {method!r}")
    return key


def proportion_interval(successes: int, n: int) -> float:
    """Half-width of the 95% normal interval of a proportion (the top-1 agreement's ± figure)."""
    if n <= 0:
        return math.nan
    p = successes / n
    return Z95 * math.sqrt(p * (1 - p) / n)


def delta_interval(sum_diff: float, sum_sq_diff: float, n: int) -> tuple[float, float, float]:
    """Relative perplexity change and its 95% interval, from the per-token NLL differences d = nll - nll_base
    (their sum and sum of squares over n tokens): exp(mean d) - 1, and exp(mean d ± z·se) - 1."""
    if n <= 1:
        return math.nan, math.nan, math.nan
    mean = sum_diff / n
    var = max(sum_sq_diff / n - mean * mean, 0.0) * n / (n - 1)
    half = Z95 * math.sqrt(var / n)
    return math.expm1(mean), math.expm1(mean - half), math.expm1(mean + half)


def consistent(kl: float, perplexity: float, base_perplexity: float) -> bool:
    """Mean KL within 30% of ln(perplexity ratio), plus 0.005. A row that breaks this points at the
    evaluation (mismatched texts, dtypes or positions), not at the format."""
    log_ratio = math.log(perplexity / base_perplexity)
    return abs(kl - log_ratio) <= CONSISTENCY_REL * abs(log_ratio) + CONSISTENCY_ABS


@dataclass(frozen=True)
class Figures:
    """What a report is judged on (fractions: delta 0.03 = 3% worse, top1 0.9 = 90%)."""

    delta: float
    kl: float
    top1: float
    perplexity: float
    base_perplexity: float


def judge(key: str, figures: Figures) -> dict[str, Any]:
    """The verdict of `figures` against the bound of `key`: the bound, whether it passed, each failed criterion,
    and the consistency check (a report that fails consistency does not pass)."""
    bound = bound_for(key)
    failures = []
    if not figures.delta <= bound.delta:
        failures.append(f"perplexity {figures.delta * 100:+.2f}% > +{bound.delta * 100:g}%")
    if not figures.kl <= bound.kl:
        failures.append(f"KL {figures.kl:.4f} > {bound.kl:g}")
    if not figures.top1 >= bound.top1:
        failures.append(f"top-1 {figures.top1 * 100:.2f}% < {bound.top1 * 100:g}%")
    is_consistent = consistent(figures.kl, figures.perplexity, figures.base_perplexity)
    if not is_consistent:
        log_ratio = math.log(figures.perplexity / figures.base_perplexity)
        failures.append(f"inconsistent: KL {figures.kl:.4f} vs ln(perplexity ratio) {log_ratio:.4f}")
    return {"bound": bound.as_dict(), "passed": not failures, "failures": failures, "consistent": is_consistent}
