"""Which GPU is this? SM detection through NVML (`nvidia-ml-py`), then torch; `SM=90` overrides both.

NVML needs no CUDA context and no torch, so it is tried first; torch is imported only when NVML is
missing or finds nothing. No GPU is not an error here: `resolve_sm` returns None and the planner
says "no GPU: pass SM=..." for the plans that need one.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from typing import Literal

from .capabilities import ARCHES
from .errors import PlanError

Source = Literal["flag", "env", "nvml", "torch"]


@dataclass(frozen=True)
class Gpu:
    """The first visible GPU: compute capability as an SM number, its name, and how it was found."""

    sm: int
    name: str
    source: Source


def parse_sm(value: str | int) -> int:
    """Accept `90`, `"90"`, `"sm90"`, `"sm_90"` or `"9.0"`; raise `PlanError` naming `SM` otherwise."""
    text = str(value).strip().lower()
    match = re.fullmatch(r"(?:sm_?)?(\d{2,3})", text) or re.fullmatch(r"(\d{1,2})\.(\d)", text)
    if match is None:
        raise PlanError(f"SM={value!r} is not an SM architecture: pass e.g. SM=90 (H100) or SM=86 (A10)")
    sm = int(match.group(1)) if match.lastindex == 1 else int(match.group(1)) * 10 + int(match.group(2))
    if sm not in ARCHES:
        known = ", ".join(a.label for a in ARCHES.values())
        raise PlanError(f"SM={sm} is not in the capability table; supported: {known}")
    return sm


def detect_nvml() -> Gpu | None:
    """The first GPU as NVML reports it, or None (no `nvidia-ml-py`, no driver, no device)."""
    if importlib.util.find_spec("pynvml") is None:
        return None
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        if pynvml.nvmlDeviceGetCount() < 1:
            return None
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        return Gpu(major * 10 + minor, name.decode() if isinstance(name, bytes) else str(name), "nvml")
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def detect_torch() -> Gpu | None:
    """The first GPU as torch reports it, or None (no torch, or a CPU-only build)."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return Gpu(major * 10 + minor, torch.cuda.get_device_name(0), "torch")


def detect_gpu() -> Gpu | None:
    """NVML first, then torch; None when neither finds a GPU."""
    return detect_nvml() or detect_torch()


def resolve_sm(flag: str | int | None = None, env: str | int | None = None, *, detect: bool = True) -> Gpu | None:
    """The SM to plan for: `--sm` wins over `SM=`, which wins over detection. None means no GPU."""
    if flag is not None:
        sm = parse_sm(flag)
        return Gpu(sm, ARCHES[sm].gpus, "flag")
    if env is not None and str(env).strip():
        sm = parse_sm(env)
        return Gpu(sm, ARCHES[sm].gpus, "env")
    return detect_gpu() if detect else None
