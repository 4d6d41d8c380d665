"""The capability table: GPU architectures, quantization methods, and which mode picks which method.

Pure data, read by `quant.plan`. Sources: vLLM's per-scheme minimum capabilities (compressed-tensors
W4A16 and W8A8-INT8 from sm75, native FP8 W8A8 from sm89, FP8 weight-only W8A16 through FP8 Marlin from
sm75) and the ModelOpt / TensorRT-LLM support matrix (INT4-AWQ and INT8-SQ from Ampere, FP8 from Ada, NVFP4
on Blackwell). As the project's seed specifies, vLLM's `8bit`/`fp8` on Ampere (sm80/sm86) is FP8 weight-only
("emulated": FP8 weights, 16-bit compute), not INT8 W8A8, which stays available by name (`int8`,
`QUANTIZATION=w8a8_int8`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

Backend = Literal["vllm", "trt"]
Mode = Literal["auto", "4bit", "awq", "8bit", "fp8", "int8", "gptq", "gptq_marlin", "none"]
Tool = Literal["llmcompressor", "modelopt"]

BACKENDS: tuple[Backend, ...] = ("vllm", "trt")
MODES: tuple[Mode, ...] = ("auto", "4bit", "awq", "8bit", "fp8", "int8", "gptq", "gptq_marlin", "none")
# Modes that only serve a pre-quantized GPTQ checkpoint (vLLM's `quantization=gptq|gptq_marlin`); they never quantize.
GPTQ_MODES: frozenset[Mode] = frozenset({"gptq", "gptq_marlin"})
# The weight bits an explicit mode asks for: a pre-quantized checkpoint with those bits is served as is.
MODE_BITS: Mapping[Mode, int] = MappingProxyType({"4bit": 4, "awq": 4, "8bit": 8, "fp8": 8, "int8": 8})


@dataclass(frozen=True)
class Arch:
    """One SM architecture: its number, family and typical GPUs."""

    sm: int
    family: str
    gpus: str

    @property
    def label(self) -> str:
        return f"sm{self.sm} ({self.family}: {self.gpus})"


ARCHES: Mapping[int, Arch] = MappingProxyType(
    {
        80: Arch(80, "Ampere", "A100 / A30"),
        86: Arch(86, "Ampere", "A10 / A40 / RTX 30"),
        89: Arch(89, "Ada", "L4 / L40S / RTX 40"),
        90: Arch(90, "Hopper", "H100 / H200 / GH200"),
        100: Arch(100, "Blackwell", "B200 / GB200"),
        120: Arch(120, "Blackwell", "RTX 50 / RTX PRO 6000"),
    }
)

ALL_SMS = frozenset(ARCHES)
AMPERE = frozenset({80, 86})
FP8_SMS = frozenset({89, 90, 100, 120})
FP4_SMS = frozenset({100, 120})


@dataclass(frozen=True)
class Method:
    """A quantization method for one backend, the tool that produces it, and where it runs."""

    key: str
    backend: Backend
    tool: Tool
    bits: int
    scheme: str
    recipe: tuple[str, ...]
    calibration: bool
    sms: frozenset[int]
    produces: str
    summary: str


def _method(**fields: Any) -> Method:
    return Method(**fields)


_VLLM = {"backend": "vllm", "tool": "llmcompressor"}
_TRT = {"backend": "trt", "tool": "modelopt"}
_W4A16_CT = "compressed-tensors pack-quantized W4A16 (int4 weights, group 128)"
_W4A16_ASYM_CT = "compressed-tensors pack-quantized W4A16 (int4 weights with zero points, group 128)"
_DYNAMIC_ACTS = "(per-channel weights, dynamic per-token activations)"

METHODS: Mapping[tuple[Backend, str], Method] = MappingProxyType(
    {
        (m.backend, m.key): m
        for m in (
            _method(key="awq", **_VLLM, bits=4, scheme="W4A16_ASYM", recipe=("AWQModifier", "QuantizationModifier"),
                    calibration=True, sms=ALL_SMS, produces=_W4A16_ASYM_CT,
                    summary="AWQ-calibrated 4-bit weights, 16-bit activations"),
            _method(key="w4a16", **_VLLM, bits=4, scheme="W4A16", recipe=("QuantizationModifier",),
                    calibration=False, sms=ALL_SMS, produces=_W4A16_CT,
                    summary="round-to-nearest 4-bit weights, no calibration"),
            _method(key="w4a16_asym", **_VLLM, bits=4, scheme="W4A16_ASYM", recipe=("QuantizationModifier",),
                    calibration=False, sms=ALL_SMS, produces=_W4A16_ASYM_CT,
                    summary="round-to-nearest 4-bit weights with zero points (AWQ's control), no calibration"),
            _method(key="fp8_dynamic", **_VLLM, bits=8, scheme="FP8_DYNAMIC", recipe=("QuantizationModifier",),
                    calibration=False, sms=FP8_SMS, produces=f"compressed-tensors float-quantized FP8 {_DYNAMIC_ACTS}",
                    summary="FP8 weights and activations, no calibration"),
            _method(key="fp8_w8a16", **_VLLM, bits=8, scheme="FP8_W8A16", recipe=("QuantizationModifier",),
                    calibration=False, sms=ALL_SMS,
                    produces="compressed-tensors FP8 weights only (per-channel scales; W8A16)",
                    summary="FP8 weights, 16-bit compute: emulated on Ampere (vLLM's FP8 Marlin), no calibration"),
            _method(key="w8a8_int8", **_VLLM, bits=8, scheme="W8A8",
                    recipe=("SmoothQuantModifier", "QuantizationModifier"), calibration=True, sms=ALL_SMS,
                    produces=f"compressed-tensors int-quantized W8A8 {_DYNAMIC_ACTS}",
                    summary="SmoothQuant-calibrated INT8 weights and activations"),
            _method(key="int4_awq", **_TRT, bits=4, scheme="int4_awq", recipe=("INT4_AWQ_CFG",), calibration=True,
                    sms=ALL_SMS, produces="W4A16_AWQ", summary="AWQ-calibrated 4-bit weights, 16-bit activations"),
            _method(key="fp8", **_TRT, bits=8, scheme="fp8", recipe=("FP8_DEFAULT_CFG",), calibration=True,
                    sms=FP8_SMS, produces="FP8", summary="FP8 weights and activations (per-tensor scales)"),
            _method(key="int8_sq", **_TRT, bits=8, scheme="int8_sq", recipe=("INT8_SMOOTHQUANT_CFG",),
                    calibration=True, sms=ALL_SMS, produces="W8A8_SQ_PER_CHANNEL",
                    summary="SmoothQuant INT8 weights and activations"),
            _method(key="int8_wo", **_TRT, bits=8, scheme="int8_wo", recipe=("INT8_WEIGHT_ONLY_CFG",),
                    calibration=False, sms=ALL_SMS, produces="W8A16",
                    summary="INT8 weights (per-channel scales), 16-bit activations; no calibration"),
            _method(key="nvfp4", **_TRT, bits=4, scheme="nvfp4", recipe=("NVFP4_DEFAULT_CFG",), calibration=True,
                    sms=FP4_SMS, produces="NVFP4", summary="NVFP4 weights and activations (Blackwell tensor cores)"),
        )
    }
)  # fmt: skip

# What each mode picks, per backend: (method, the SMs where it is the pick). A mode with a single
# row over ALL_SMS does not depend on the GPU; others need the SM to choose.
MODE_PICKS: Mapping[tuple[Backend, Mode], tuple[tuple[str, frozenset[int]], ...]] = MappingProxyType(
    {
        ("vllm", "auto"): (("fp8_dynamic", FP8_SMS), ("awq", AMPERE)),
        ("vllm", "4bit"): (("awq", ALL_SMS),),
        ("vllm", "awq"): (("awq", ALL_SMS),),
        ("vllm", "8bit"): (("fp8_dynamic", FP8_SMS), ("fp8_w8a16", AMPERE)),
        ("vllm", "fp8"): (("fp8_dynamic", FP8_SMS), ("fp8_w8a16", AMPERE)),
        ("vllm", "int8"): (("w8a8_int8", ALL_SMS),),
        ("trt", "auto"): (("fp8", FP8_SMS), ("int4_awq", AMPERE)),
        ("trt", "4bit"): (("int4_awq", ALL_SMS),),
        ("trt", "awq"): (("int4_awq", ALL_SMS),),
        ("trt", "8bit"): (("fp8", FP8_SMS), ("int8_sq", AMPERE)),
        ("trt", "fp8"): (("fp8", ALL_SMS),),
        ("trt", "int8"): (("int8_sq", ALL_SMS),),
    }
)

# Which methods an explicit override (QUANTIZATION=...) may pick under each mode.
MODE_ALLOWS: Mapping[tuple[Backend, Mode], frozenset[str]] = MappingProxyType(
    {
        ("vllm", "auto"): frozenset({"awq", "w4a16", "w4a16_asym", "fp8_dynamic", "fp8_w8a16", "w8a8_int8"}),
        ("vllm", "4bit"): frozenset({"awq", "w4a16", "w4a16_asym"}),
        ("vllm", "awq"): frozenset({"awq"}),
        ("vllm", "8bit"): frozenset({"fp8_dynamic", "fp8_w8a16", "w8a8_int8"}),
        ("vllm", "fp8"): frozenset({"fp8_dynamic", "fp8_w8a16"}),
        ("vllm", "int8"): frozenset({"w8a8_int8"}),
        ("trt", "auto"): frozenset({"int4_awq", "fp8", "int8_sq", "int8_wo", "nvfp4"}),
        ("trt", "4bit"): frozenset({"int4_awq", "nvfp4"}),
        ("trt", "awq"): frozenset({"int4_awq"}),
        ("trt", "8bit"): frozenset({"fp8", "int8_sq", "int8_wo"}),
        ("trt", "fp8"): frozenset({"fp8"}),
        ("trt", "int8"): frozenset({"int8_sq", "int8_wo"}),
    }
)

# QUANTIZATION=... spellings accepted per backend -> method key.
OVERRIDE_ALIASES: Mapping[Backend, Mapping[str, str]] = MappingProxyType(
    {
        "vllm": MappingProxyType(
            {
                "awq": "awq",
                "w4a16_awq": "awq",
                "int4_awq": "awq",
                "w4a16": "w4a16",
                "w4a16_asym": "w4a16_asym",
                "fp8": "fp8_dynamic",
                "fp8_dynamic": "fp8_dynamic",
                "fp8_w8a16": "fp8_w8a16",
                "w8a16_fp8": "fp8_w8a16",
                "fp8_weight_only": "fp8_w8a16",
                "int8": "w8a8_int8",
                "int8_sq": "w8a8_int8",
                "w8a8": "w8a8_int8",
                "w8a8_int8": "w8a8_int8",
            }
        ),
        "trt": MappingProxyType(
            {
                "awq": "int4_awq",
                "int4_awq": "int4_awq",
                "w4a16_awq": "int4_awq",
                "fp8": "fp8",
                "int8": "int8_sq",
                "int8_sq": "int8_sq",
                "w8a8_sq": "int8_sq",
                "int8_wo": "int8_wo",
                "w8a16": "int8_wo",
                "int8_weight_only": "int8_wo",
                "nvfp4": "nvfp4",
                "fp4": "nvfp4",
            }
        ),
    }
)

# The quantized KV cache (ModelOpt FP8_KV_CFG) needs FP8 tensor cores.
FP8_KV_SMS = FP8_SMS


def methods_on(backend: Backend, sm: int | None) -> tuple[str, ...]:
    """The method keys of `backend` that run on `sm` (all of them when `sm` is None), in table order."""
    return tuple(m.key for (b, _), m in METHODS.items() if b == backend and (sm is None or sm in m.sms))


def sm_list(sms: frozenset[int]) -> str:
    """`frozenset({89, 90})` -> "sm89 or sm90"."""
    names = [f"sm{s}" for s in sorted(sms)]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
