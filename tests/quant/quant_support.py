"""Shared by the quantization tests: where `.venv-quant` lives, fast calibration, and the demo build matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quant.gpu import Gpu
from quant.settings import QuantSettings

REPO = Path(__file__).resolve().parents[2]
QUANT_VENV = REPO / ".venv-quant"

# Small calibration so CPU builds take seconds; recorded in the metadata like any other setting.
FAST_CALIBRATION = {"awq_nsamples": 8, "awq_seqlen": 64, "trt_calib_size": 4, "trt_calib_seqlen": 64}

# name -> (backend, mode, QUANTIZATION override, simulated SM): every variant the build tests inspect.
DEMO_BUILDS: dict[str, tuple[str, str, str | None, int | None]] = {
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


def demo_request(name: str, store: Path, model: Path, **fields: Any) -> tuple[QuantSettings, Gpu | None]:
    """The settings and (simulated) GPU of one `DEMO_BUILDS` variant."""
    backend, mode, quantization, sm = DEMO_BUILDS[name]
    settings = make_settings(
        model=str(model), backend=backend, mode=mode, quantization=quantization, engines_dir=store, **fields
    )
    return settings, Gpu(sm, "simulated", "flag") if sm is not None else None
