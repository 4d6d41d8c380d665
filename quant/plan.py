"""`plan(model, backend, mode, sm) -> QuantPlan`: pure and table-driven (see `quant.capabilities`).

The plan is data (a frozen pydantic model, JSON round-trip) that the build executes and the metadata
records. Rules, in order:

1. Tool models (sequence classifiers) are never quantized.
2. A pre-quantized checkpoint (its config first, its name second) is served as is, when the backend
   can load that format; it is never quantized again. `auto`, `none`, and an explicit mode asking for the
   bits it already has (`4bit` on a 4-bit repo) serve it; `gptq`/`gptq_marlin` serve a GPTQ repo with that
   vLLM kernel; any other request to quantize it is refused.
3. `none` serves the model unquantized; `gptq`/`gptq_marlin` on a checkpoint that is not GPTQ are refused.
4. An override (`QUANTIZATION=...`) must fit the mode and the GPU; otherwise the mode picks, by SM
   where it depends on it (`auto`, `8bit`) — those need an SM ("no GPU: pass SM=...").
5. A method the GPU cannot run is refused with a message naming the GPU and the options; it is never
   downgraded silently.
6. 4-bit group quantization uses groups of 128 (the seed's and the tools' default) unless a linear layer's
   input width (hidden size, MLP width, heads x head_dim, from the config) is not a multiple of it: then the
   largest of 64/32/16 that divides them all, with a note (TensorRT-LLM's export and vLLM's kernels refuse
   partial groups).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .capabilities import (
    ALL_SMS,
    ARCHES,
    BACKENDS,
    FP8_KV_SMS,
    GPTQ_MODES,
    METHODS,
    MODE_ALLOWS,
    MODE_BITS,
    MODE_PICKS,
    MODES,
    OVERRIDE_ALIASES,
    Backend,
    Method,
    Mode,
    Tool,
    methods_on,
    sm_list,
)
from .detect import ModelInfo, Prequantized
from .errors import NoGpuError, PlanError, UnsupportedOnArchError

Action = Literal["quantize", "serve_as_is", "none"]
Role = Literal["chat", "tool"]

# ModelOpt HF exports vLLM can load (vLLM `quantization/modelopt.py`); W4A16_AWQ / W8A8_SQ are rejected.
VLLM_MODELOPT_ALGOS = frozenset(
    {"FP8", "FP8_PER_CHANNEL_PER_TOKEN", "FP8_PB_WO", "NVFP4", "W4A16_NVFP4", "MXFP8", "MIXED_PRECISION"}
)
VLLM_UNSUPPORTED_FORMATS = frozenset({"bitsandbytes"})
# Routers stay in high precision (llm-compressor's MoE examples; ModelOpt's presets already skip them).
MOE_IGNORE = ("re:.*mlp.gate$", "re:.*router$", "re:.*shared_expert_gate$")
GROUP_SIZES = (128, 64, 32, 16)
# Formats read as 4-bit when only the name is known (seed: awq, w4a16, compressed-tensors, autoround; GPTQ
# repos are 4-bit by convention).
NAME_4BIT_FORMATS = frozenset({"awq", "compressed-tensors", "autoround", "gptq"})


class QuantPlan(BaseModel):
    """What to build for one model, backend and GPU, and why. Serialisable (`to_json`/`from_json`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    backend: Backend
    mode: Mode
    sm: int | None
    gpu: str | None
    action: Action
    method: str | None = None
    tool: Tool | None = None
    scheme: str | None = None
    recipe: tuple[str, ...] = ()
    bits: int | None = None
    calibration: bool = False
    ignore: tuple[str, ...] = ()
    kv_cache_dtype: Literal["fp8"] | None = None
    awq_block_size: int | None = None
    smoothquant_alpha: float | None = None
    group_size: int | None = None
    serve_quantization: str | None = None
    produces: str | None = None
    exports: tuple[str, ...] = ()
    prequantized: str | None = None
    detected_from: str | None = None
    moe: bool = False
    reason: str
    notes: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str) -> QuantPlan:
        return cls.model_validate_json(text)


def plan(
    model: ModelInfo | str,
    backend: str,
    mode: str = "auto",
    sm: int | None = None,
    *,
    override: str | None = None,
    role: Role = "chat",
    kv_cache_dtype: str | None = None,
    awq_block_size: int = 128,
    smoothquant_alpha: float | None = None,
) -> QuantPlan:
    """Decide what to build. A plain string is taken as a name only: pass `inspect_model(name)` to
    detect from the checkpoint's own files. Raises `PlanError` (or a subclass) when refused."""
    info = model if isinstance(model, ModelInfo) else ModelInfo(model)
    be = _check_backend(backend)
    md = _check_mode(mode)
    if sm is not None and sm not in ARCHES:
        known = ", ".join(a.label for a in ARCHES.values())
        raise UnsupportedOnArchError(f"sm{sm} is not supported for quantized builds; supported: {known}")
    notes = list(info.notes)

    def make(action: Action, reason: str, **fields: Any) -> QuantPlan:
        return QuantPlan(
            model=info.name,
            backend=be,
            mode=md,
            sm=sm,
            gpu=ARCHES[sm].label if sm is not None else None,
            moe=info.moe,
            options=methods_on(be, sm),
            action=action,
            reason=reason,
            notes=tuple(notes),
            **fields,
        )

    if role == "tool" or info.is_tool_classifier:
        if md not in ("auto", "none") or override:
            raise PlanError(
                f"{info.name} is a tool model, and tool models are never quantized "
                "(they are small and bound by batching, not by weight size): use --mode none"
            )
        return make("none", "tool models are never quantized")

    pre = info.prequantized
    if pre is not None:
        _check_servable(info.name, be, md, override, pre)
        what = _describe(pre)
        asked = f"; --mode {md} asks for the {MODE_BITS[md]}-bit it already is" if md in MODE_BITS else ""
        return make(
            "serve_as_is",
            f"already quantized ({what}): served as is{asked}",
            prequantized=pre.format,
            detected_from=pre.source,
            serve_quantization=md if md in GPTQ_MODES else None,
        )

    if md in GPTQ_MODES:
        raise PlanError(
            f"--mode {md} serves a pre-quantized GPTQ checkpoint, and {info.name} is not one: "
            "use --mode 4bit (or awq) to quantize it, or point MODEL at a GPTQ repository"
        )

    if md == "none":
        if override:
            raise PlanError(f"QUANTIZATION={override} contradicts --mode none (QUANT=none): drop one of them")
        return make("none", "mode none: the model is served unquantized")

    key, reason = _pick(be, md, sm, override)
    method = METHODS[(be, key)]
    if sm is not None and sm not in method.sms:
        raise UnsupportedOnArchError(_refusal(method, sm, be))
    if sm is None and method.sms != ALL_SMS:
        notes.append(f"{key} runs natively only on {sm_list(method.sms)}; not checked (no SM given)")
    kv = _check_kv(kv_cache_dtype, be, sm, notes)
    ignore: tuple[str, ...] = ("lm_head",)
    group: int | None = None
    if method.bits == 4 and key != "nvfp4":
        group = _group_size(info, awq_block_size if key == "int4_awq" else 128, notes)
    if info.moe:
        notes.append("mixture-of-experts: router/gate layers stay unquantized")
        if method.tool == "llmcompressor":
            ignore += MOE_IGNORE
    return make(
        "quantize",
        reason,
        method=key,
        tool=method.tool,
        scheme=method.scheme,
        recipe=method.recipe + (("FP8_KV_CFG",) if kv else ()),
        bits=method.bits,
        calibration=method.calibration,
        ignore=ignore,
        kv_cache_dtype=kv,
        awq_block_size=group if key == "int4_awq" else None,
        smoothquant_alpha=smoothquant_alpha if key == "int8_sq" else None,
        group_size=group if be == "vllm" else None,
        produces=method.produces.replace("group 128", f"group {group}") if group else method.produces,
        exports=("compressed-tensors",) if be == "vllm" else ("hf", "trtllm-checkpoint"),
    )


def _check_backend(backend: str) -> Backend:
    for b in BACKENDS:
        if backend == b:
            return b
    raise PlanError(f"ENGINE/--backend must be one of {', '.join(BACKENDS)} for quantized builds (got {backend!r})")


def _check_mode(mode: str) -> Mode:
    for m in MODES:
        if mode == m:
            return m
    raise PlanError(f"QUANT/--mode must be one of {'|'.join(MODES)} (got {mode!r})")


def _pick(backend: Backend, mode: Mode, sm: int | None, override: str | None) -> tuple[str, str]:
    """The method key and why it was chosen."""
    if override:
        aliases = OVERRIDE_ALIASES[backend]
        key = aliases.get(override.strip().lower())
        if key is None:
            raise PlanError(f"QUANTIZATION={override} is not a {backend} method; valid: {', '.join(sorted(aliases))}")
        if key not in MODE_ALLOWS[(backend, mode)]:
            allowed = ", ".join(sorted(MODE_ALLOWS[(backend, mode)]))
            raise PlanError(
                f"QUANTIZATION={override} contradicts --mode {mode} (it allows {allowed}): drop one of them"
            )
        return key, f"QUANTIZATION={override} (override)"
    picks = MODE_PICKS[(backend, mode)]
    if len(picks) == 1 and picks[0][1] == ALL_SMS:
        return picks[0][0], f"--mode {mode} on {backend} is {picks[0][0]}"
    by_gpu = "; ".join(f"{key} on {sm_list(sms)}" for key, sms in picks)
    if sm is None:
        raise NoGpuError(
            f"no GPU: pass SM=... (e.g. SM=90 for H100, SM=89 for L4, SM=86 for A10) or --sm; "
            f"--mode {mode} on {backend} picks by GPU ({by_gpu})"
        )
    for key, sms in picks:
        if sm in sms:
            return key, f"--mode {mode} on {ARCHES[sm].label} picks {key} ({by_gpu})"
    raise UnsupportedOnArchError(f"--mode {mode} has no {backend} method for {ARCHES[sm].label}")  # pragma: no cover


def _refusal(method: Method, sm: int, backend: Backend) -> str:
    options = methods_on(backend, sm)
    return (
        f"{method.key} does not run on {ARCHES[sm].label}: it needs {sm_list(method.sms)}. "
        f"Options for {backend} on sm{sm}: {', '.join(options)} (QUANTIZATION={'|'.join(options)}), or --mode none"
    )


def _check_kv(kv_cache_dtype: str | None, backend: Backend, sm: int | None, notes: list[str]) -> Literal["fp8"] | None:
    if kv_cache_dtype in (None, "", "auto"):
        return None
    if kv_cache_dtype != "fp8":
        raise PlanError(f"TRT_KV_CACHE_DTYPE must be auto or fp8 (got {kv_cache_dtype!r})")
    if backend != "trt":
        raise PlanError(
            "TRT_KV_CACHE_DTYPE=fp8 applies to --backend trt; vLLM sets its KV dtype at serve time (KV_DTYPE)"
        )
    if sm is not None and sm not in FP8_KV_SMS:
        raise UnsupportedOnArchError(
            f"an FP8 KV cache does not run on {ARCHES[sm].label}: it needs {sm_list(FP8_KV_SMS)}; "
            "set TRT_KV_CACHE_DTYPE=auto"
        )
    if sm is None:
        notes.append(f"FP8 KV cache runs only on {sm_list(FP8_KV_SMS)}; not checked (no SM given)")
    return "fp8"


def _describe(pre: Prequantized) -> str:
    return f"{pre.format}{f' ({pre.detail})' if pre.detail else ''}, from {pre.source}"


def _check_servable(name: str, backend: Backend, mode: Mode, override: str | None, pre: Prequantized) -> None:
    """A pre-quantized checkpoint is served as is: refuse a request to quantize it, or a backend that cannot load it."""
    what = _describe(pre)
    if mode in GPTQ_MODES:
        if pre.format != "gptq" or backend != "vllm":
            raise PlanError(
                f"--mode {mode} serves GPTQ checkpoints on vLLM; {name} is {what} on {backend}: "
                "use --mode auto to serve it as is"
            )
        return
    bits = prequantized_bits(pre)
    asks_its_bits = mode in MODE_BITS and not override and bits == MODE_BITS[mode]
    if (mode not in ("auto", "none") and not asks_its_bits) or override:
        asked = f"QUANTIZATION={override}" if override else f"--mode {mode}"
        has = f" ({bits}-bit)" if bits else ""
        raise PlanError(
            f"{name} is already quantized ({what}){has} and is served as is; {asked} cannot apply: "
            "pass --mode auto, or start from the unquantized model"
        )
    if backend == "vllm" and (
        pre.format in VLLM_UNSUPPORTED_FORMATS
        or (pre.format == "modelopt" and pre.detail is not None and pre.detail not in VLLM_MODELOPT_ALGOS)
    ):
        raise PlanError(
            f"{name} is {what}, which vLLM cannot load: use --backend trt, or start from the unquantized model"
        )
    if backend == "trt" and pre.format != "modelopt":
        raise PlanError(
            f"{name} is {what}; TensorRT-LLM loads ModelOpt checkpoints (hf_quant_config.json): "
            "use --backend vllm, or start from the unquantized model"
        )


def prequantized_bits(pre: Prequantized) -> int | None:
    """The weight bits of a pre-quantized checkpoint, from its config detail, else its format (None = unknown)."""
    detail = (pre.detail or "").lower()
    for bits in (4, 8):
        if f"{bits}-bit" in detail or f"int{bits}" in detail or f"w{bits}a" in detail or f"{bits}bit" in detail:
            return bits
    if "fp4" in detail or "awq" in detail:
        return 4
    if "fp8" in detail or "float8" in detail or pre.format == "fp8":
        return 8
    if pre.detail is None and pre.format in NAME_4BIT_FORMATS:
        return 4
    return 4 if pre.format in ("awq", "autoround") else None


def linear_input_widths(info: ModelInfo) -> dict[str, int]:
    """The input widths of the model's linear layers, by the config field they come from (empty without one)."""
    cfgs = info.configs()
    if not cfgs:
        return {}
    cfg = cfgs[-1]  # a nested text config, when there is one, holds the language model's sizes
    widths: dict[str, int] = {}
    for field in ("hidden_size", "intermediate_size", "moe_intermediate_size"):
        if isinstance(cfg.get(field), int):
            widths[field] = cfg[field]
    heads, head_dim = cfg.get("num_attention_heads"), cfg.get("head_dim")
    if isinstance(heads, int) and isinstance(head_dim, int):
        widths["num_attention_heads x head_dim"] = heads * head_dim
    return widths


def _group_size(info: ModelInfo, preferred: int, notes: list[str]) -> int:
    """The 4-bit group size: `preferred` when it divides every linear input width, else the largest that does."""
    widths = linear_input_widths(info)
    if all(w % preferred == 0 for w in widths.values()):
        return preferred
    for size in GROUP_SIZES:
        if size < preferred and all(w % size == 0 for w in widths.values()):
            bad = ", ".join(f"{w} ({name})" for name, w in widths.items() if w % preferred)
            notes.append(f"4-bit group size {size}: {bad} is not a multiple of {preferred}")
            return size
    raise PlanError(
        f"{info.name}: no 4-bit group size in {GROUP_SIZES} divides its layer widths {widths}; use an 8-bit mode"
    )
