"""The per-format quality bounds and the arithmetic behind a quality report, on small fixed numbers (no model)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from quant.bounds import (
    AWQ_VS_RTN_KL,
    BOUNDS,
    METHOD_BOUNDS,
    Figures,
    UnknownFormatError,
    bound_for,
    bound_key,
    consistent,
    delta_interval,
    judge,
    proportion_interval,
)
from quant.capabilities import METHODS
from quant.errors import QuantError

# The table: perplexity delta, mean KL, top-1 (float32 compute, against the bf16 base).
TABLE = {
    "eval_floor": (0.002, 0.002, 0.985),
    "int8_w8a16": (0.015, 0.015, 0.94),
    "fp8_w8a16": (0.025, 0.025, 0.90),
    "w8a8_int8": (0.025, 0.025, 0.91),
    "fp8_dynamic": (0.03, 0.03, 0.88),
    "trt_fp8": (0.04, 0.04, 0.86),
    "trt_int8_sq": (0.08, 0.08, 0.85),
    "awq_w4a16": (0.25, 0.22, 0.74),
    "trt_int4_awq": (0.30, 0.26, 0.70),
}


def test_every_format_has_its_own_bound() -> None:
    assert {k: (b.delta, b.kl, b.top1) for k, b in BOUNDS.items()} == TABLE
    assert AWQ_VS_RTN_KL == 0.6
    for (backend, method), key in METHOD_BOUNDS.items():
        assert (backend, method) in METHODS, (backend, method)
        assert bound_for(bound_key(backend, method)).key == key


@pytest.mark.parametrize("key", ["int8", "fp8", "w4a16", "", "EVAL_FLOOR"])
def test_an_unknown_format_has_no_bound_and_is_an_error(key: str) -> None:
    with pytest.raises(UnknownFormatError, match="no quality bound"):
        bound_for(key)
    assert issubclass(UnknownFormatError, QuantError)


@pytest.mark.parametrize(("backend", "method"), [("vllm", "w4a16"), ("vllm", "w4a16_asym"), ("trt", "nvfp4"),
                                                  ("trt", "awq"), ("vllm", None)])  # fmt: skip
def test_methods_without_a_bound_are_errors_not_passes(backend: str, method: str | None) -> None:
    with pytest.raises(UnknownFormatError):
        bound_key(backend, method)


def test_the_top1_interval_is_the_normal_95_percent_half_width() -> None:
    # the figure: at 2,689 tokens and ~90% agreement the interval is about ±1.1 points
    assert proportion_interval(2420, 2689) == pytest.approx(1.96 * math.sqrt(0.9 * 0.1 / 2689), rel=1e-3)
    assert 0.0110 < proportion_interval(2420, 2689) < 0.0115
    assert proportion_interval(10, 10) == 0.0
    assert math.isnan(proportion_interval(0, 0))


def test_the_perplexity_delta_interval_comes_from_the_per_token_differences() -> None:
    diffs = [0.1, -0.05, 0.2, 0.0, 0.05]
    n = len(diffs)
    delta, low, high = delta_interval(sum(diffs), sum(d * d for d in diffs), n)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    assert delta == pytest.approx(math.exp(0.06) - 1)
    assert low == pytest.approx(math.exp(mean - 1.959964 * sd / math.sqrt(n)) - 1)
    assert high == pytest.approx(math.exp(mean + 1.959964 * sd / math.sqrt(n)) - 1)
    assert low < delta < high
    same = delta_interval(0.3, 0.03 * 0.3, 10)  # every token +0.03: no spread, no width
    assert same[1] == pytest.approx(same[0]) == pytest.approx(same[2]) == pytest.approx(math.expm1(0.03))


def test_the_consistency_check() -> None:
    ratio = 1.05  # ln 1.05 = 0.04879: allowed |KL - 0.04879| <= 0.01464 + 0.005
    assert consistent(0.0488, 10.5, 10.0)
    assert consistent(0.0488 + 0.019, 10.5, 10.0) and consistent(0.0488 - 0.019, 10.5, 10.0)
    assert not consistent(0.0488 + 0.0205, 10.0 * ratio, 10.0)
    assert not consistent(0.0100, 10.5, 10.0)
    assert consistent(0.004, 10.0, 10.0) and not consistent(0.006, 10.0, 10.0)  # the 0.005 floor


def _figures(delta: float, kl: float, top1: float) -> Figures:
    return Figures(delta=delta, kl=kl, top1=top1, perplexity=20.0 * (1 + delta), base_perplexity=20.0)


def test_judge_passes_within_the_bound_and_names_each_failure() -> None:
    ok = judge("trt_int8_sq", _figures(0.05, math.log(1.05), 0.88))
    assert ok["passed"] and ok["consistent"] and not ok["failures"]
    assert ok["bound"] == {"key": "trt_int8_sq", "label": BOUNDS["trt_int8_sq"].label, "delta": 0.08, "kl": 0.08,
                           "top1": 0.85}  # fmt: skip
    bad = judge("int8_w8a16", _figures(0.02, math.log(1.02), 0.93))
    assert not bad["passed"] and bad["consistent"]
    assert bad["failures"] == ["perplexity +2.00% > +1.5%", "KL 0.0198 > 0.015", "top-1 93.00% < 94%"]
    inconsistent = judge("awq_w4a16", _figures(0.10, 0.02, 0.80))  # inside the bound, but KL far from ln 1.1
    assert not inconsistent["passed"] and not inconsistent["consistent"]
    assert inconsistent["failures"][0].startswith("inconsistent: KL 0.0200 vs ln(perplexity ratio) 0.0953")
    with pytest.raises(UnknownFormatError):
        judge("w4a16", _figures(0.0, 0.0, 1.0))


# --- the runner's per-window sums, on small fixed logits ---------------------------------------------------------


def _sums(logits: list[list[float]], base: list[list[float]], targets: list[int], margin: float) -> dict[str, Any]:
    torch = pytest.importorskip("torch")
    from quant.runners.evaluate import window_sums

    return window_sums(torch, torch.tensor(logits), torch.tensor(base), torch.tensor(targets), margin)


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def test_window_sums_on_fixed_logits() -> None:
    base = [[2.0, 1.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 3.0]]  # clear, near-tie, clear
    quant = [[1.5, 1.2, 0.0], [0.2, 0.0, 0.0], [0.0, 1.0, 2.0]]  # agrees, flips the near-tie, agrees
    targets = [0, 1, 2]
    sums = _sums(quant, base, targets, 0.2)
    p, q = [_softmax(r) for r in base], [_softmax(r) for r in quant]
    nll = [-math.log(q[i][t]) for i, t in enumerate(targets)]
    nll_base = [-math.log(p[i][t]) for i, t in enumerate(targets)]
    kl = sum(p[i][j] * math.log(p[i][j] / q[i][j]) for i in range(3) for j in range(3))
    assert sums["tokens"] == 3
    assert sums["nll"] == pytest.approx(sum(nll), rel=1e-5)
    assert sums["nll_base"] == pytest.approx(sum(nll_base), rel=1e-5)
    assert sums["diff"] == pytest.approx(sum(nll) - sum(nll_base), rel=1e-5)
    assert sums["diff_sq"] == pytest.approx(sum((a - b) ** 2 for a, b in zip(nll, nll_base, strict=True)), rel=1e-5)
    assert sums["kl"] == pytest.approx(kl, rel=1e-5)
    assert sums["agree"] == 2
    # the near-tie (top two 0.36 / 0.32) is left out of the margin-conditioned figure
    assert sums["margin_tokens"] == 2 and sums["margin_agree"] == 2
    assert _sums(quant, base, targets, 0.0)["margin_tokens"] == 3
    assert _sums(quant, base, targets, 0.99)["margin_tokens"] == 0


def test_figures_from_sums() -> None:
    from quant.runners.evaluate import figures

    sums = {"tokens": 4, "nll": 8.0, "nll_base": 7.6, "diff": 0.4, "diff_sq": 0.05, "agree": 3, "kl": 0.36,
            "margin_tokens": 2, "margin_agree": 2}  # fmt: skip
    out = figures(sums)
    assert out["perplexity"] == pytest.approx(math.exp(2.0)) and out["base_perplexity"] == pytest.approx(math.exp(1.9))
    assert out["top1_agreement"] == 0.75 and out["margin_top1"] == 1.0 and out["margin_tokens"] == 2
    assert out["kl"] == pytest.approx(0.09)
    assert out["top1_interval"] == pytest.approx(proportion_interval(3, 4))
    low, high = out["delta_interval"]
    assert low < math.exp(0.1) - 1 < high
    assert figures({**sums, "margin_tokens": 0, "margin_agree": 0})["margin_top1"] is None
