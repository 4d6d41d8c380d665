"""llm-compressor runner (vLLM checkpoints): AWQ -> W4A16, W4A16, FP8_DYNAMIC, SmoothQuant + W8A8.

Job keys: model, revision, output_dir, log, method, scheme, group_size (4-bit), ignore, calibration (None
for data-free methods, else {source, nsamples, seqlen}). Writes a compressed-tensors checkpoint with the tokenizer,
which vLLM loads as is.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ._common import Events, bridge_tqdm, device, load_texts, run


def _allow_awq_without_accelerator() -> None:
    """llm-compressor's AWQ pins its cached activations (`IntermediatesCache.pin_memory`) for faster
    host-to-GPU copies, which raises "Cannot access accelerator device when none is available" on a
    CPU-only torch. Without an accelerator there is nothing to copy to, so pinning is made a no-op.
    This is the only place the workaround lives; it is applied only when no accelerator exists."""
    from llmcompressor.pipelines.cache import IntermediatesCache

    def no_pin(self: Any, batch_index: int, input_names: list[str] | None = None) -> None:
        return None

    IntermediatesCache.pin_memory = no_pin  # type: ignore[method-assign]


def load_tools(events: Events) -> Any:
    bridge_tqdm(events)
    import torch
    from compressed_tensors.quantization import preset_name_to_scheme
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier, SmoothQuantModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not torch.accelerator.is_available():
        _allow_awq_without_accelerator()
    return SimpleNamespace(
        oneshot=oneshot,
        preset_name_to_scheme=preset_name_to_scheme,
        QuantizationModifier=QuantizationModifier,
        AWQModifier=AWQModifier,
        SmoothQuantModifier=SmoothQuantModifier,
        AutoModelForCausalLM=AutoModelForCausalLM,
        AutoTokenizer=AutoTokenizer,
    )


def _scheme(job: dict[str, Any], tools: Any) -> dict[str, Any]:
    """The quantizer's scheme: a preset name, or config groups where the plan departs from the presets
    (FP8 weight-only W8A16 has no preset; 4-bit groups other than 128 for models whose widths need them).

    AWQ uses `W4A16_ASYM`: int4 with a zero point per group, as AWQ was published and as AutoAWQ and
    llm-compressor's AWQ examples build it. The search scales the weights before they are rounded; a zero
    point lets each group use all 16 levels of its own range. On SmolLM2-135M at group 64 it is the difference
    between +37% perplexity (symmetric) and +17% (benchmarks/quant-smollm2.json)."""
    name, group_size = job["scheme"], job.get("group_size")
    if name == "FP8_W8A16":
        fp8 = tools.preset_name_to_scheme("FP8_DYNAMIC", ["Linear"])
        return {"config_groups": {"group_0": fp8.model_copy(update={"input_activations": None})}}
    if name in ("W4A16", "W4A16_ASYM") and group_size and group_size != 128:
        w4 = tools.preset_name_to_scheme(name, ["Linear"])
        weights = w4.weights.model_copy(update={"group_size": group_size})
        return {"config_groups": {"group_0": w4.model_copy(update={"weights": weights})}}
    return {"scheme": name, "targets": ["Linear"]}


def _recipe(job: dict[str, Any], tools: Any) -> list[Any]:
    quantize = tools.QuantizationModifier(**_scheme(job, tools), ignore=list(job["ignore"]))
    if job["method"] == "awq":
        return [tools.AWQModifier(), quantize]
    if job["method"] == "w8a8_int8":
        return [tools.SmoothQuantModifier(smoothing_strength=0.8), quantize]
    return [quantize]


def main(events: Events, job: dict[str, Any], tools: Any) -> dict[str, Any]:
    with events.stage("load"):
        tokenizer = tools.AutoTokenizer.from_pretrained(job["model"], revision=job.get("revision"))
        model = tools.AutoModelForCausalLM.from_pretrained(job["model"], revision=job.get("revision"), dtype="auto")

    calibration = job.get("calibration")
    used: dict[str, Any] | None = None
    kwargs: dict[str, Any] = {}
    if calibration:
        from datasets import Dataset

        texts, used = load_texts(calibration["source"], calibration["nsamples"])
        seqlen = calibration["seqlen"]
        encoded = tokenizer(texts, truncation=True, max_length=seqlen, add_special_tokens=False)
        dataset = Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
        used = {**used, "seqlen": seqlen, "batch_size": 1, "max_tokens": max(len(ids) for ids in encoded["input_ids"])}
        kwargs = {"dataset": dataset, "num_calibration_samples": len(texts), "max_seq_length": seqlen}

    recipe = _recipe(job, tools)
    with events.stage("calibrate" if calibration else "quantize", total=used["nsamples"] if used else None):
        tools.oneshot(model=model, recipe=recipe, **kwargs)

    out = Path(job["output_dir"])
    with events.stage("export"):
        model.save_pretrained(out, save_compressed=True)
        tokenizer.save_pretrained(out)
    saved = out / "recipe.yaml"
    return {
        "device": device(),
        "calibration": used,
        "recipe": [type(m).__name__ for m in recipe],
        "recipe_yaml": saved.read_text() if saved.exists() else None,
    }


if __name__ == "__main__":
    run(load_tools, main)
