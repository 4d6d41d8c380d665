"""llm-compressor runner (vLLM checkpoints): AWQ -> W4A16, W4A16, FP8_DYNAMIC, SmoothQuant + W8A8.

Job keys: model, revision, output_dir, log, method, scheme, ignore, calibration (None for data-free
methods, else {source, nsamples, seqlen}). Writes a compressed-tensors checkpoint with the tokenizer,
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
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier, SmoothQuantModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not torch.accelerator.is_available():
        _allow_awq_without_accelerator()
    return SimpleNamespace(
        oneshot=oneshot,
        QuantizationModifier=QuantizationModifier,
        AWQModifier=AWQModifier,
        SmoothQuantModifier=SmoothQuantModifier,
        AutoModelForCausalLM=AutoModelForCausalLM,
        AutoTokenizer=AutoTokenizer,
    )


def _recipe(job: dict[str, Any], tools: Any) -> list[Any]:
    quantize = tools.QuantizationModifier(scheme=job["scheme"], targets=["Linear"], ignore=list(job["ignore"]))
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
