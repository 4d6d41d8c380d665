"""The planner over every SM x backend x mode, overrides and refusals, and the `yap quant plan` command."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from quant.cli import main
from quant.detect import ModelInfo, inspect_model
from quant.errors import NoGpuError, PlanError, UnsupportedOnArchError
from quant.plan import QuantPlan, plan

SMS = (80, 86, 89, 90, 100, 120)
REFUSED = "refused"

# Written out by hand (not derived from the capability table), so a change to the table shows up here.
EXPECTED: dict[tuple[str, str], dict[int, str]] = {
    ("vllm", "auto"): {80: "awq", 86: "awq", 89: "fp8_dynamic", 90: "fp8_dynamic", 100: "fp8_dynamic",
                       120: "fp8_dynamic"},
    ("vllm", "4bit"): dict.fromkeys(SMS, "awq"),
    ("vllm", "awq"): dict.fromkeys(SMS, "awq"),
    # the seed: 8-bit on Ampere is FP8 weight-only (W8A16, emulated), not INT8 W8A8
    ("vllm", "8bit"): {80: "fp8_w8a16", 86: "fp8_w8a16", 89: "fp8_dynamic", 90: "fp8_dynamic", 100: "fp8_dynamic",
                       120: "fp8_dynamic"},
    ("vllm", "fp8"): {80: "fp8_w8a16", 86: "fp8_w8a16", 89: "fp8_dynamic", 90: "fp8_dynamic", 100: "fp8_dynamic",
                      120: "fp8_dynamic"},
    ("vllm", "int8"): dict.fromkeys(SMS, "w8a8_int8"),
    ("trt", "auto"): {80: "int4_awq", 86: "int4_awq", 89: "fp8", 90: "fp8", 100: "fp8", 120: "fp8"},
    ("trt", "4bit"): dict.fromkeys(SMS, "int4_awq"),
    ("trt", "awq"): dict.fromkeys(SMS, "int4_awq"),
    ("trt", "8bit"): {80: "int8_sq", 86: "int8_sq", 89: "fp8", 90: "fp8", 100: "fp8", 120: "fp8"},
    ("trt", "fp8"): {80: REFUSED, 86: REFUSED, 89: "fp8", 90: "fp8", 100: "fp8", 120: "fp8"},
    ("trt", "int8"): dict.fromkeys(SMS, "int8_sq"),
}  # fmt: skip
TOOL = {"vllm": "llmcompressor", "trt": "modelopt"}
DENSE = ModelInfo("org/dense-chat", {"architectures": ["LlamaForCausalLM"], "model_type": "llama"})


@pytest.mark.parametrize("sm", SMS)
@pytest.mark.parametrize(("backend", "mode"), list(EXPECTED))
def test_the_table(backend: str, mode: str, sm: int) -> None:
    want = EXPECTED[(backend, mode)][sm]
    if want == REFUSED:
        with pytest.raises(UnsupportedOnArchError) as err:
            plan(DENSE, backend, mode, sm)
        assert {80: "on sm80 (Ampere: A100", 86: "on sm86 (Ampere: A10"}[sm] in str(err.value)
        assert f"Options for {backend} on sm{sm}:" in str(err.value)
        return
    p = plan(DENSE, backend, mode, sm)
    assert (p.action, p.method, p.tool, p.sm) == ("quantize", want, TOOL[backend], sm)
    assert p.ignore == ("lm_head",)
    assert p.exports == (("compressed-tensors",) if backend == "vllm" else ("hf", "trtllm-checkpoint"))


@pytest.mark.parametrize("backend", ["vllm", "trt"])
@pytest.mark.parametrize("sm", [*SMS, None])
def test_none_serves_unquantized(backend: str, sm: int | None) -> None:
    p = plan(DENSE, backend, "none", sm)
    assert (p.action, p.method, p.tool) == ("none", None, None)


def test_presets_and_algorithms_are_recorded() -> None:
    awq = plan(DENSE, "trt", "4bit", 90)
    assert (awq.recipe, awq.produces, awq.awq_block_size, awq.calibration) == (
        ("INT4_AWQ_CFG",),
        "W4A16_AWQ",
        128,
        True,
    )
    assert plan(DENSE, "trt", "8bit", 86).produces == "W8A8_SQ_PER_CHANNEL"  # the seed's engines load it
    assert plan(DENSE, "trt", "8bit", 90).recipe == ("FP8_DEFAULT_CFG",)
    vllm_awq = plan(DENSE, "vllm", "awq", 80)
    assert (vllm_awq.scheme, vllm_awq.recipe) == ("W4A16_ASYM", ("AWQModifier", "QuantizationModifier"))
    fp8 = plan(DENSE, "vllm", "fp8", 90)
    assert (fp8.scheme, fp8.calibration) == ("FP8_DYNAMIC", False)
    assert plan(DENSE, "vllm", "int8", 86).recipe == ("SmoothQuantModifier", "QuantizationModifier")
    assert plan(DENSE, "trt", "4bit", 90, awq_block_size=64).awq_block_size == 64


def test_nvfp4_is_offered_on_blackwell_only() -> None:
    for sm in (100, 120):
        p = plan(DENSE, "trt", "4bit", sm, override="nvfp4")
        assert (p.method, p.produces) == ("nvfp4", "NVFP4")
        assert "nvfp4" in p.options
    assert "nvfp4" not in plan(DENSE, "trt", "4bit", 90).options
    with pytest.raises(UnsupportedOnArchError, match=r"nvfp4 does not run on sm90 .*needs sm100 or sm120"):
        plan(DENSE, "trt", "4bit", 90, override="nvfp4")


def test_int8_sq_carries_its_smoothquant_strength_and_int8_wo_is_available_by_name() -> None:
    p = plan(DENSE, "trt", "8bit", 86, smoothquant_alpha=0.8)
    assert (p.method, p.produces, p.smoothquant_alpha) == ("int8_sq", "W8A8_SQ_PER_CHANNEL", 0.8)
    assert plan(DENSE, "trt", "8bit", 86).smoothquant_alpha is None  # ModelOpt's preset as is
    assert plan(DENSE, "trt", "8bit", 90, smoothquant_alpha=0.8).smoothquant_alpha is None  # fp8 there
    wo = plan(DENSE, "trt", "8bit", 86, override="w8a16")
    assert (wo.method, wo.produces, wo.recipe, wo.calibration) == ("int8_wo", "W8A16", ("INT8_WEIGHT_ONLY_CFG",), False)
    rtn = plan(DENSE, "vllm", "4bit", 86, override="w4a16_asym")
    assert (rtn.method, rtn.scheme, rtn.calibration) == ("w4a16_asym", "W4A16_ASYM", False)


def test_an_override_is_honoured_where_the_gpu_runs_it() -> None:
    p = plan(DENSE, "trt", "8bit", 90, override="int8_sq")
    assert (p.method, p.reason) == ("int8_sq", "QUANTIZATION=int8_sq (override)")
    assert plan(DENSE, "trt", "auto", 89, override="int8_sq").method == "int8_sq"
    assert plan(DENSE, "vllm", "8bit", 90, override="int8").method == "w8a8_int8"
    assert plan(DENSE, "vllm", "4bit", 86, override="w4a16").method == "w4a16"


def test_an_override_the_gpu_cannot_run_is_refused_naming_gpu_and_options() -> None:
    with pytest.raises(UnsupportedOnArchError) as err:
        plan(DENSE, "trt", "8bit", 86, override="fp8")
    message = str(err.value)
    assert "fp8 does not run on sm86 (Ampere: A10" in message
    assert "needs sm89, sm90, sm100 or sm120" in message
    assert "Options for trt on sm86: int4_awq, int8_sq, int8_wo" in message
    options = r"Options for vllm on sm80: awq, w4a16, w4a16_asym, fp8_w8a16, w8a8_int8"
    with pytest.raises(UnsupportedOnArchError, match=options):
        plan(DENSE, "vllm", "auto", 80, override="fp8")


def test_overrides_that_contradict_the_mode_or_are_unknown_are_refused() -> None:
    with pytest.raises(PlanError, match=r"QUANTIZATION=fp8 contradicts --mode 4bit"):
        plan(DENSE, "trt", "4bit", 90, override="fp8")
    with pytest.raises(PlanError, match=r"contradicts --mode none"):
        plan(DENSE, "vllm", "none", 90, override="awq")
    with pytest.raises(PlanError, match=r"QUANTIZATION=gguf is not a trt method; valid: .*int8_sq"):
        plan(DENSE, "trt", "auto", 90, override="gguf")


@pytest.mark.parametrize(("backend", "mode"), [("vllm", "auto"), ("vllm", "8bit"), ("trt", "auto"), ("trt", "8bit")])
def test_gpu_dependent_plans_need_an_sm(backend: str, mode: str) -> None:
    with pytest.raises(NoGpuError, match=r"^no GPU: pass SM=\.\.\. \(e\.g\. SM=90 for H100"):
        plan(DENSE, backend, mode, None)


def test_gpu_independent_plans_run_without_an_sm_and_say_what_was_not_checked() -> None:
    awq = plan(DENSE, "vllm", "4bit", None)
    assert (awq.method, awq.sm, awq.notes) == ("awq", None, ())
    fp8 = plan(DENSE, "vllm", "8bit", None, override="fp8")
    assert fp8.method == "fp8_dynamic"
    assert fp8.notes == ("fp8_dynamic runs natively only on sm89, sm90, sm100 or sm120; not checked (no SM given)",)


def test_unknown_sm_backend_and_mode_are_refused() -> None:
    with pytest.raises(UnsupportedOnArchError, match=r"sm75 is not supported .*sm80 \(Ampere: A100"):
        plan(DENSE, "vllm", "4bit", 75)
    with pytest.raises(PlanError, match=r"ENGINE/--backend must be one of vllm, trt .*'fake'"):
        plan(DENSE, "fake", "4bit", 90)
    with pytest.raises(PlanError, match=r"QUANT/--mode must be one of auto\|4bit"):
        plan(DENSE, "vllm", "3bit", 90)


def test_fp8_kv_cache_option() -> None:
    p = plan(DENSE, "trt", "8bit", 90, kv_cache_dtype="fp8")
    assert (p.kv_cache_dtype, p.recipe) == ("fp8", ("FP8_DEFAULT_CFG", "FP8_KV_CFG"))
    assert plan(DENSE, "trt", "8bit", 90, kv_cache_dtype="auto").kv_cache_dtype is None
    with pytest.raises(UnsupportedOnArchError, match=r"FP8 KV cache does not run on sm86"):
        plan(DENSE, "trt", "4bit", 86, kv_cache_dtype="fp8")
    with pytest.raises(PlanError, match=r"applies to --backend trt"):
        plan(DENSE, "vllm", "4bit", 90, kv_cache_dtype="fp8")


def test_plans_round_trip_through_json() -> None:
    p = plan(DENSE, "trt", "8bit", 90, kv_cache_dtype="fp8")
    again = QuantPlan.from_json(p.to_json())
    assert again == p
    assert json.loads(p.to_json())["recipe"] == ["FP8_DEFAULT_CFG", "FP8_KV_CFG"]


# --- pre-quantized, MoE and tool models, detected from real config files -------------------------------------


def write_model(root: Path, name: str, config: dict[str, Any], hf_quant: dict[str, Any] | None = None) -> str:
    path = root / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    if hf_quant is not None:
        (path / "hf_quant_config.json").write_text(json.dumps(hf_quant))
    return str(path)


LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128}


def test_prequantized_checkpoints_are_served_as_is(tmp_path: Path) -> None:
    gptq = write_model(tmp_path, "plain-name", {**LLAMA, "quantization_config": {"quant_method": "gptq", "bits": 4}})
    p = plan(inspect_model(gptq), "vllm", "auto", None)
    assert (p.action, p.prequantized, p.detected_from, p.method) == ("serve_as_is", "gptq", "config.json", None)
    assert plan(inspect_model(gptq), "vllm", "none", 86).action == "serve_as_is"
    with pytest.raises(PlanError, match=r"already quantized \(gptq \(4-bit\), from config.json\) \(4-bit\).*mode 8bit"):
        plan(inspect_model(gptq), "vllm", "8bit", 90)
    with pytest.raises(PlanError, match=r"TensorRT-LLM loads ModelOpt checkpoints"):
        plan(inspect_model(gptq), "trt", "auto", 90)

    ct = {"quant_method": "compressed-tensors", "format": "pack-quantized",
          "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}}}}  # fmt: skip
    ct_dir = write_model(tmp_path, "ct", {**LLAMA, "quantization_config": ct})
    assert plan(inspect_model(ct_dir), "vllm", "auto", 90).reason == (
        "already quantized (compressed-tensors (pack-quantized, int4 weights), from config.json): served as is"
    )


def test_modelopt_exports_go_to_the_backend_that_loads_them(tmp_path: Path) -> None:
    awq = write_model(tmp_path, "mo-awq", LLAMA, {"quantization": {"quant_algo": "W4A16_AWQ"}})
    p = plan(inspect_model(awq), "trt", "auto", 90)
    assert (p.action, p.prequantized, p.detected_from) == ("serve_as_is", "modelopt", "hf_quant_config.json")
    with pytest.raises(PlanError, match=r"W4A16_AWQ.*which vLLM cannot load"):
        plan(inspect_model(awq), "vllm", "auto", 90)
    fp8 = write_model(tmp_path, "mo-fp8", LLAMA, {"quantization": {"quant_algo": "FP8"}})
    assert plan(inspect_model(fp8), "vllm", "auto", 90).action == "serve_as_is"


def test_the_config_wins_over_the_name(tmp_path: Path) -> None:
    unquantized = write_model(tmp_path, "llama-awq-experiments", LLAMA)
    p = plan(inspect_model(unquantized), "vllm", "4bit", 90)
    assert (p.action, p.prequantized) == ("quantize", None)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("TheBloke/Llama-2-7B-Chat-GPTQ", "gptq"),
        ("Qwen/Qwen2.5-7B-Instruct-AWQ", "awq"),
        ("RedHatAI/Llama-3.1-8B-Instruct-quantized.w4a16", "compressed-tensors"),
        ("org/llama-compressed-tensors", "compressed-tensors"),
        ("Intel/Qwen3-8B-int4-AutoRound", "autoround"),
        ("org/llama-3-8b-trt-fp8", "modelopt"),
        ("org/TensorRT-Llama-int8", "modelopt"),
        ("org/llama-trtllm-awq", "modelopt"),
        ("meta-llama/Llama-3.1-8B-Instruct", None),
        ("org/llama-fp8", None),
    ],
)
def test_name_markers_when_no_config_is_readable(name: str, fmt: str | None) -> None:
    pre = ModelInfo(name).prequantized
    assert (pre.format if pre else None) == fmt
    if pre is not None:
        assert pre.source == "name"


def test_moe_is_read_from_the_config(tmp_path: Path) -> None:
    mixtral = write_model(tmp_path, "plain", {**LLAMA, "num_local_experts": 8, "num_experts_per_tok": 2})
    nested = write_model(tmp_path, "vl", {"architectures": ["X"], "text_config": {"num_experts": 64}})
    dense_named_moe = write_model(tmp_path, "tiny-moe-8x7b", LLAMA)
    assert inspect_model(mixtral).num_experts == 8 and inspect_model(mixtral).moe
    assert inspect_model(nested).num_experts == 64
    assert not inspect_model(dense_named_moe).moe
    p = plan(inspect_model(mixtral), "vllm", "4bit", 90)
    assert p.moe and p.ignore == ("lm_head", "re:.*mlp.gate$", "re:.*router$", "re:.*shared_expert_gate$")
    assert "mixture-of-experts: router/gate layers stay unquantized" in p.notes
    trt = plan(inspect_model(mixtral), "trt", "4bit", 90)
    assert trt.moe and trt.ignore == ("lm_head",)  # ModelOpt's presets already keep routers unquantized


@pytest.mark.parametrize(
    ("name", "moe"),
    [("Qwen/Qwen3-30B-A3B", True), ("mistralai/Mixtral-8x7B-Instruct-v0.1", True), ("org/OLMoE-1B-7B", True),
     ("Qwen/Qwen3-8B", False), ("meta-llama/Llama-3.2-3B", False)],
)  # fmt: skip
def test_moe_from_the_name_only_without_a_config(name: str, moe: bool) -> None:
    assert ModelInfo(name).moe is moe


def test_tool_models_are_never_quantized(tmp_path: Path) -> None:
    classifier = write_model(tmp_path, "tool", {"architectures": ["BertForSequenceClassification"]})
    p = plan(inspect_model(classifier), "vllm", "auto", 90)
    assert (p.action, p.reason) == ("none", "tool models are never quantized")
    with pytest.raises(PlanError, match=r"tool models are never quantized.*--mode none"):
        plan(inspect_model(classifier), "vllm", "4bit", 90)
    assert plan(DENSE, "trt", "auto", 90, role="tool").action == "none"


def test_an_unreachable_hub_model_falls_back_to_its_name_at_once() -> None:
    started = time.perf_counter()
    info = inspect_model("TheBloke/Some-Model-GPTQ", endpoint="http://127.0.0.1:9")  # nothing listens there
    assert time.perf_counter() - started < 5  # one attempt, no retry back-off
    assert info.config is None
    assert info.notes == ("config.json not readable (ConnectError): detected from the name only",)
    p = plan(info, "vllm", "auto", None)
    assert (p.prequantized, p.detected_from) == ("gptq", "name")
    assert p.notes == info.notes


# --- the seed's rules (seed 001, "Quantization Notes") -----------------------------------------------------

GPTQ_CONFIG = {**LLAMA, "quantization_config": {"quant_method": "gptq", "bits": 4}}
CT_W4 = {"quant_method": "compressed-tensors", "format": "pack-quantized",
         "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}}}}  # fmt: skip
CT_FP8 = {"quant_method": "compressed-tensors", "format": "float-quantized",
          "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}}}}  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "sm", "method", "scheme"),
    [
        ("8bit", 80, "fp8_w8a16", "FP8_W8A16"),  # A100: FP8 weights, 16-bit compute ("emulated")
        ("8bit", 86, "fp8_w8a16", "FP8_W8A16"),
        ("fp8", 80, "fp8_w8a16", "FP8_W8A16"),
        ("8bit", 89, "fp8_dynamic", "FP8_DYNAMIC"),  # L40S / H100: native FP8
        ("8bit", 90, "fp8_dynamic", "FP8_DYNAMIC"),
        ("int8", 80, "w8a8_int8", "W8A8"),  # INT8 W8A8 stays available by name
        ("int8", 90, "w8a8_int8", "W8A8"),
    ],
)
def test_vllm_8bit_follows_the_seed(mode: str, sm: int, method: str, scheme: str) -> None:
    p = plan(DENSE, "vllm", mode, sm)
    assert (p.method, p.scheme, p.bits) == (method, scheme, 8)
    if method == "fp8_w8a16":
        assert not p.calibration and "W8A16" in (p.produces or "")


@pytest.mark.parametrize(("override", "sm"), [("w8a8_int8", 80), ("int8", 86), ("w8a8", 90)])
def test_int8_w8a8_by_name_under_8bit(override: str, sm: int) -> None:
    assert plan(DENSE, "vllm", "8bit", sm, override=override).method == "w8a8_int8"


@pytest.mark.parametrize(
    ("config", "name", "mode", "backend", "outcome"),
    [
        # gptq / gptq_marlin: modes for pre-quantized GPTQ repositories, passed to vLLM as quantization=...
        (GPTQ_CONFIG, "plain", "gptq", "vllm", "gptq"),
        (GPTQ_CONFIG, "plain", "gptq_marlin", "vllm", "gptq_marlin"),
        (None, "TheBloke/Llama-2-7B-Chat-GPTQ", "gptq_marlin", "vllm", "gptq_marlin"),
        (LLAMA, "plain", "gptq", "vllm", "refused: is not one"),
        ({**LLAMA, "quantization_config": {"quant_method": "awq", "bits": 4}}, "plain", "gptq", "vllm",
         "refused: serves GPTQ checkpoints"),
        (GPTQ_CONFIG, "plain", "gptq", "trt", "refused: serves GPTQ checkpoints"),
        # an explicit 4bit on a pre-quantized 4-bit repository serves it as is
        (GPTQ_CONFIG, "plain", "4bit", "vllm", "as is"),
        ({**LLAMA, "quantization_config": {"quant_method": "awq", "bits": 4}}, "plain", "awq", "vllm", "as is"),
        ({**LLAMA, "quantization_config": CT_W4}, "plain", "4bit", "vllm", "as is"),
        (None, "Qwen/Qwen2.5-7B-Instruct-AWQ", "4bit", "vllm", "as is"),
        (None, "RedHatAI/Llama-3.1-8B-Instruct-quantized.w4a16", "4bit", "vllm", "as is"),
        (None, "Intel/Qwen3-8B-int4-AutoRound", "4bit", "vllm", "as is"),
        (None, "org/llama-trtllm-awq", "4bit", "trt", "as is"),
        ({**LLAMA, "quantization_config": CT_FP8}, "plain", "8bit", "vllm", "as is"),
        # ... but a different number of bits is still refused
        ({**LLAMA, "quantization_config": CT_FP8}, "plain", "4bit", "vllm", "refused: already quantized"),
        (GPTQ_CONFIG, "plain", "8bit", "vllm", "refused: already quantized"),
    ],
)  # fmt: skip
def test_prequantized_rules(
    tmp_path: Path, config: dict[str, Any] | None, name: str, mode: str, backend: str, outcome: str
) -> None:
    info = inspect_model(write_model(tmp_path, name, config)) if config is not None else ModelInfo(name)
    if outcome.startswith("refused: "):
        with pytest.raises(PlanError, match=outcome.removeprefix("refused: ")):
            plan(info, backend, mode, 90)
        return
    p = plan(info, backend, mode, 90)
    assert (p.action, p.method) == ("serve_as_is", None)
    assert p.serve_quantization == (outcome if outcome.startswith("gptq") else None)
    if mode in ("4bit", "awq", "8bit"):
        assert p.reason.endswith("already is"), p.reason


@pytest.mark.parametrize(
    ("name", "fmt", "detail"),
    [
        ("org/llama-trt-fp8", "modelopt", "fp8"),
        ("org/llama-trt-8bit", "modelopt", "8bit"),
        ("org/llama-trt-8-bit", "modelopt", "8-bit"),
        ("org/llama-trt-int8", "modelopt", "int8"),
        ("org/llama-trt-int-8", "modelopt", "int-8"),
        ("org/llama-trt-awq", "modelopt", "awq"),
        ("org/llama-8bit", None, None),  # without "trt" an 8-bit marker says nothing
    ],
)
def test_trt_prequantized_name_markers(name: str, fmt: str | None, detail: str | None) -> None:
    pre = ModelInfo(name).prequantized
    assert (pre.format, pre.detail) == (fmt, detail) if pre else (fmt, detail) == (None, None)
    if pre is not None:
        assert plan(ModelInfo(name), "trt", "auto", 90).action == "serve_as_is"


SMOL = {**LLAMA, "hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "head_dim": 64}


@pytest.mark.parametrize(
    ("config", "backend", "mode", "group", "note"),
    [
        (LLAMA | {"hidden_size": 4096, "intermediate_size": 14336}, "vllm", "4bit", 128, None),
        (SMOL, "vllm", "4bit", 64, "4-bit group size 64: 576 (hidden_size), 576 (num_attention_heads x head_dim) is "
                                   "not a multiple of 128"),
        (SMOL, "trt", "4bit", 64, "4-bit group size 64"),
        (SMOL | {"hidden_size": 480, "head_dim": 48, "num_attention_heads": 10}, "vllm", "4bit", 32,
         "4-bit group size 32"),
        (SMOL, "vllm", "8bit", None, None),
    ],
)  # fmt: skip
def test_4bit_group_size_fits_the_layer_widths(
    tmp_path: Path, config: dict[str, Any], backend: str, mode: str, group: int | None, note: str | None
) -> None:
    p = plan(inspect_model(write_model(tmp_path, "m", config)), backend, mode, 90)
    assert (p.group_size if backend == "vllm" else p.awq_block_size) == group
    if note is None:
        assert not any("group size" in n for n in p.notes)
    else:
        assert any(n.startswith(note) for n in p.notes), p.notes


def test_calibration_defaults_follow_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    from quant.settings import QuantSettings

    for var in ("AWQ_NSAMPLES", "AWQ_SEQLEN", "TRT_CALIB_SIZE", "TRT_CALIB_BATCH_SIZE", "TRT_AWQ_BLOCK_SIZE"):
        monkeypatch.delenv(var, raising=False)
    s = QuantSettings.from_env()
    assert (s.awq_nsamples, s.awq_seqlen, s.trt_calib_size, s.trt_calib_batch_size) == (64, 2048, 64, 16)
    assert s.trt_awq_block_size == 128 and s.calib_dataset("llmcompressor") is None  # the shipped texts


def test_the_evaluation_computes_in_float32_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from quant.settings import QuantSettings
    from yap_engines.settings import SettingsError

    monkeypatch.delenv("QUANT_EVAL_DTYPE", raising=False)
    assert QuantSettings.from_env().eval_dtype == "float32"
    monkeypatch.setenv("QUANT_EVAL_DTYPE", "bfloat16")
    assert QuantSettings.from_env().eval_dtype == "bfloat16"
    monkeypatch.setenv("QUANT_EVAL_DTYPE", "int8")
    with pytest.raises(SettingsError, match="QUANT_EVAL_DTYPE: Input should be 'float32', 'bfloat16' or 'float16'"):
        QuantSettings.from_env()


@pytest.mark.parametrize("env", [{}, {"TRT_MAX_BATCH_SIZE": "24"}, {"YAP_TRT_MAX_BATCH_SIZE": "12"}])
def test_trt_max_batch_size_means_the_same_when_building_and_serving(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    from quant.settings import QuantSettings
    from yap_engines.settings import EngineSettings

    for var in ("TRT_MAX_BATCH_SIZE", "YAP_TRT_MAX_BATCH_SIZE"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    built, served = QuantSettings.from_env().trt_max_batch_size, EngineSettings.from_env().trt_max_batch_size
    assert built == served == int(next(iter(env.values()), served))


def test_what_the_engine_owns_is_parsed_once_by_engine_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """MODEL (and its seed aliases), ENGINE and YAP_ENGINES_DIR reach a build through EngineSettings only:
    a seed-style CHAT_MODEL is the model quantize-on-deploy sees, and no second spelling is read here."""
    from quant.settings import QuantSettings

    for var in (
        "MODEL",
        "YAP_MODEL",
        "ENGINE",
        "INFERENCE_ENGINE",
        "YAP_ENGINE",
        "TRT_ENGINE_DIR",
        "TRT_CHECKPOINT_DIR",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CHAT_MODEL", "org/seed-model")
    monkeypatch.setenv("INFERENCE_ENGINE", "trt")
    monkeypatch.setenv("YAP_ENGINES_DIR", "/srv/engines")
    monkeypatch.setenv("ENGINES_DIR", "/not/this")  # a field name, not a variable: never read
    monkeypatch.setenv("BACKEND", "vllm")
    s = QuantSettings.from_env()
    assert (s.model, s.backend, s.engines_dir) == ("org/seed-model", "trt", Path("/srv/engines"))
    assert QuantSettings.from_env(model="other", engines_dir=Path("x")).model == "other"


# --- the command -------------------------------------------------------------------------------------------


def test_plan_command_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_model(tmp_path, "chat", LLAMA)
    assert main(["plan", "--model", model, "--backend", "trt", "--mode", "8bit", "--sm", "86", "--json"]) == 0
    p = QuantPlan.from_json(capsys.readouterr().out)
    assert (p.method, p.sm, p.gpu) == ("int8_sq", 86, "sm86 (Ampere: A10 / A40 / RTX 30)")


def test_a_refused_plan_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    model = write_model(tmp_path, "chat", LLAMA)
    cmd = [sys.executable, "-m", "quant.cli", "quant", "plan", "--model", model, "--backend", "trt", "--mode", "fp8",
           "--sm", "86", "--json"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert out.stdout == ""
    assert "refused: fp8 does not run on sm86 (Ampere: A10 / A40 / RTX 30)" in out.stderr
    assert "Options for trt on sm86: int4_awq, int8_sq, int8_wo" in out.stderr


def test_sm_comes_from_the_environment_and_the_flag_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write_model(tmp_path, "chat", LLAMA)
    monkeypatch.setenv("SM", "90")
    assert main(["plan", "--model", model, "--backend", "vllm", "--mode", "8bit", "--json"]) == 0
    assert QuantPlan.from_json(capsys.readouterr().out).method == "fp8_dynamic"
    assert main(["plan", "--model", model, "--backend", "vllm", "--mode", "8bit", "--sm", "86", "--json"]) == 0
    assert QuantPlan.from_json(capsys.readouterr().out).method == "fp8_w8a16"
    monkeypatch.setenv("SM", "sm_75")
    assert main(["plan", "--model", model, "--mode", "4bit"]) == 2
    assert "SM=75 is not in the capability table" in capsys.readouterr().err


def test_importing_quant_pulls_in_no_heavy_package() -> None:
    heavy = ("torch", "vllm", "tensorrt_llm", "transformers", "modelopt", "llmcompressor")
    code = (
        "import json, sys\n"
        "import quant, quant.cli, quant.plan, quant.build, quant.push, quant.gpu, quant.env, quant.runner\n"
        "import quant.artifacts, quant.metadata, quant.card, quant.calibration, quant.runners.trtllm_build\n"
        "import quant.evaluate, quant.deploy, quant.heldout\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
