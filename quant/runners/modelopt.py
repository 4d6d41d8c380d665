"""ModelOpt runner (TensorRT-LLM checkpoints): INT4-AWQ, FP8, INT8-SmoothQuant, NVFP4, optional FP8 KV cache.

Job keys: model, revision, output_dir, log, method, preset, awq_block_size, smoothquant_alpha (int8_sq),
kv_cache_dtype, calibration ({source, nsamples, seqlen, batch_size}). Writes the unified HF checkpoint (config.json +
hf_quant_config.json + weights + tokenizer) that TensorRT-LLM's PyTorch backend loads, and the
TensorRT-LLM checkpoint (config.json + rank0.safetensors) under `trtllm-ckpt/` for `trtllm-build`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ._common import Events, bridge_tqdm, device, load_texts, run

# TensorRT-LLM's quantize.py calibrates AWQ on at most 32 samples: awq_lite searches per sample.
AWQ_MAX_SAMPLES = 32
LEGACY_DIR = "trtllm-ckpt"


def _config(mtq: Any, job: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = copy.deepcopy(getattr(mtq, job["preset"]))
    if job["method"] == "int4_awq":
        for entry in cfg["quant_cfg"]:
            if entry.get("quantizer_name") == "*weight_quantizer":
                entry["cfg"]["block_sizes"][-1] = job["awq_block_size"]
    if job["method"] == "int8_sq" and job.get("smoothquant_alpha") is not None:
        cfg["algorithm"] = {"method": "smoothquant", "alpha": job["smoothquant_alpha"]}
    if job.get("kv_cache_dtype") == "fp8":
        cfg["quant_cfg"] = [*cfg["quant_cfg"], *copy.deepcopy(mtq.FP8_KV_CFG)["quant_cfg"]]
    return cfg


def load_tools(events: Events) -> Any:
    bridge_tqdm(events)
    import modelopt.torch.quantization as mtq
    import torch
    from modelopt.torch.export import export_hf_checkpoint, export_tensorrt_llm_checkpoint
    from modelopt.torch.export.model_utils import get_model_type
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return SimpleNamespace(
        mtq=mtq,
        torch=torch,
        export_hf_checkpoint=export_hf_checkpoint,
        export_tensorrt_llm_checkpoint=export_tensorrt_llm_checkpoint,
        get_model_type=get_model_type,
        AutoModelForCausalLM=AutoModelForCausalLM,
        AutoTokenizer=AutoTokenizer,
    )


def main(events: Events, job: dict[str, Any], tools: Any) -> dict[str, Any]:
    torch, mtq = tools.torch, tools.mtq
    on = device()
    with events.stage("load"):
        tokenizer = tools.AutoTokenizer.from_pretrained(job["model"], revision=job.get("revision"))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model: Any = tools.AutoModelForCausalLM.from_pretrained(
            job["model"], revision=job.get("revision"), dtype="auto"
        )
        model = model.to(on).eval()

    calibration = job.get("calibration")
    used: dict[str, Any] | None = None
    batches: list[Any] = []
    if calibration:  # weight-only INT8 needs none: the weights' own ranges set their scales
        nsamples = calibration["nsamples"]
        if job["method"] == "int4_awq":
            nsamples = min(nsamples, AWQ_MAX_SAMPLES)
        texts, used = load_texts(calibration["source"], nsamples)
        batch_size, seqlen = calibration["batch_size"], calibration["seqlen"]
        batches = [
            tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=seqlen)
            for i in range(0, len(texts), batch_size)
        ]
        used = {**used, "seqlen": seqlen, "batch_size": batch_size, "batches": len(batches)}

    def forward_loop(m: Any) -> None:
        for done, batch in enumerate(batches, 1):
            with torch.no_grad():
                m(input_ids=batch["input_ids"].to(on), attention_mask=batch["attention_mask"].to(on))
            events.emit("bar", desc="calibration batches", n=done, total=len(batches))

    with events.stage("calibrate" if batches else "quantize", total=len(batches) or None):
        mtq.quantize(model, _config(mtq, job), forward_loop=forward_loop if batches else None)

    out = Path(job["output_dir"])
    dtype = model.dtype if model.dtype in (torch.float16, torch.bfloat16) else torch.float16
    legacy: dict[str, Any]
    with events.stage("export"):
        decoder = tools.get_model_type(model)
        if decoder is None:
            legacy = {
                "written": False,
                "reason": f"ModelOpt has no TensorRT-LLM decoder type for {type(model).__name__}",
            }
        else:
            tools.export_tensorrt_llm_checkpoint(
                model, decoder_type=decoder, dtype=dtype, export_dir=out / LEGACY_DIR, inference_tensor_parallel=1
            )
            legacy = {"written": True, "dir": LEGACY_DIR, "decoder_type": decoder}
        tools.export_hf_checkpoint(model, dtype=dtype, export_dir=out)
        tokenizer.save_pretrained(out)
    recipe = [job["preset"], *(["FP8_KV_CFG"] if job.get("kv_cache_dtype") == "fp8" else [])]
    if job["method"] == "int8_sq" and job.get("smoothquant_alpha") is not None:
        recipe[0] += f"(alpha={job['smoothquant_alpha']:g})"
    return {"device": on, "calibration": used, "recipe": recipe, "trtllm_checkpoint": legacy}


if __name__ == "__main__":
    run(load_tools, main)
