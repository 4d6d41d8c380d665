"""The model card (`README.md`) generated for a push: base model, method, GPU, versions, how to serve it."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from .metadata import BuildMetadata

BACKEND_NAMES = MappingProxyType({"vllm": "vLLM", "trt": "TensorRT-LLM"})
TOOL_PACKAGES = MappingProxyType(
    {"llmcompressor": ("llmcompressor", "compressed-tensors"), "modelopt": ("nvidia-modelopt",)}
)


def _is_hub_id(model: str) -> bool:
    return not Path(model).exists() and model.count("/") == 1 and not model.startswith((".", "/"))


def _calibration(meta: BuildMetadata) -> str:
    calib = meta.calibration
    if not calib:
        return "none (data-free)"
    source = calib.get("source", calib)
    name = "the embedded calibration texts" if source.get("kind") == "embedded" else f"`{source.get('name')}`"
    return f"{name}, {calib.get('nsamples')} samples of up to {calib.get('seqlen')} tokens"


def _versions(meta: BuildMetadata) -> str:
    tool = meta.plan.tool or ""
    names = (*TOOL_PACKAGES.get(tool, ()), "transformers", "torch")
    return ", ".join(f"{n} {meta.versions[n]}" for n in names if n in meta.versions)


def _quality(meta: BuildMetadata) -> list[str]:
    """The `yap quant eval` report, when the build has one."""
    q = meta.quality
    if not q:
        return []

    def num(key: str, fmt: str) -> str:
        value = q.get(key)
        return "-" if value is None else format(value, fmt)

    ppl, base = q.get("perplexity"), q.get("base_perplexity")
    delta = f" ({(ppl / base - 1) * 100:+.2f}% vs the base" if ppl and base else ""
    if delta and q.get("delta_interval"):
        low, high = q["delta_interval"]
        delta += f", 95% interval {low * 100:+.2f}% to {high * 100:+.2f}%"
    delta += ")" if delta else ""
    top1 = q.get("top1_agreement")
    top1_text = "-" if top1 is None else f"{top1 * 100:.2f}%"
    if top1 is not None and q.get("top1_interval") is not None:
        top1_text += f" ± {q['top1_interval'] * 100:.2f} (95%)"
    margin = q.get("margin_top1")
    margin_text = "-" if margin is None else f"{margin * 100:.2f}% of {q.get('margin_tokens')} tokens"
    compute = f", {q['compute_dtype']} compute" if q.get("compute_dtype") else ""  # reports before it was recorded
    lines = [
        "## Quality",
        "",
        f"Measured by `yap quant eval` on {q.get('tokens')} tokens of a held-out English text "
        f"(`{q.get('text')}`, sha256 `{q.get('text_sha256')}`), never used for calibration.",
        "",
        "| | |",
        "|---|---|",
        f"| Perplexity | {num('perplexity', '.3f')}{delta} |",
        f"| Base perplexity | {num('base_perplexity', '.3f')} |",
        f"| Top-1 agreement with the base | {top1_text} |",
        f"| Top-1 where the base's top two differ by ≥ {q.get('margin') or 0.2:g} | {margin_text} |",
        f"| KL(base ‖ this), mean per token | {num('kl', '.4f')} |",
        f"| Quality bound | {_bound(q)} |",
        f"| Size on disk | {q.get('size_bytes', 0) / 1e6:.1f} MB |",
        f"| Build time | {num('build_seconds', '.1f')} s |",
        f"| Computed by | {q.get('path')}{compute} |",
        "",
    ]
    lines += [f"Not used: {kernel}." for kernel in q.get("kernels_unavailable", [])]
    return [*lines, ""] if q.get("kernels_unavailable") else lines


def _bound(quality: dict[str, Any]) -> str:
    """The format's bound and the verdict, from the report (`quant.bounds`)."""
    verdict = quality.get("verdict")
    if not verdict:
        return "none for this format (not checked)"
    b = verdict["bound"]
    limits = f"perplexity ≤ +{b['delta'] * 100:g}%, KL ≤ {b['kl']:g}, top-1 ≥ {b['top1'] * 100:g}%"
    result = "**passed**" if verdict["passed"] else "**not met**: " + "; ".join(verdict["failures"])
    return f"{b['label']}: {limits}; {result}"


def model_card(meta: BuildMetadata, repo_id: str) -> str:
    """The checkpoint's card: YAML front matter (base_model for hub models) and a short description."""
    p = meta.plan
    base = meta.model if _is_hub_id(meta.model) else Path(meta.model).name
    tags = ["yap", "quantized", p.method or "none", "compressed-tensors" if p.tool == "llmcompressor" else "modelopt"]
    front = ["---"]
    if _is_hub_id(meta.model):
        front.append(f"base_model: {meta.model}")
    front += ["pipeline_tag: text-generation", "tags:", *(f"- {t}" for t in tags), "---", ""]
    backend = BACKEND_NAMES[p.backend]
    serve = f"yap serve --engine {p.backend} --model {repo_id}"
    body = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"`{base}` quantized with **{p.method}** ({p.produces}) for **{backend}**, built by Yap (`yap quant build`).",
        "",
        "| | |",
        "|---|---|",
        f"| Base model | `{base}` (revision `{meta.revision}`) |",
        f"| Method | {p.method}: {', '.join(p.recipe)} (scheme {p.scheme}) |",
        f"| GPU | {p.gpu or 'not GPU-specific (no SM given)'} |",
        f"| Calibration | {_calibration(meta)} |",
        f"| Versions | {_versions(meta)} |",
        f"| Build key | `{meta.key}` |",
        "",
        *_quality(meta),
        "## Serve it with Yap",
        "",
        "```bash",
        serve,
        f"make serve ENGINE={p.backend} MODEL={repo_id}",
        "```",
        "",
        "`build_metadata.json` records the plan, tool versions, calibration, durations and file hashes.",
        "",
    ]
    return "\n".join(front + body)


def engine_card(meta: BuildMetadata, repo_id: str, folder: str) -> str:
    """The card of a compiled TensorRT engine folder (engines are specific to one GPU and TensorRT-LLM version)."""
    trtllm = (meta.legacy_engine or {}).get("versions", {}).get("tensorrt_llm", "unknown")
    return "\n".join(
        [
            f"# TensorRT-LLM engine: {folder}",
            "",
            f"Compiled with `trtllm-build` from this repo's {meta.plan.method} checkpoint for {meta.plan.gpu}.",
            f"It runs only on that GPU architecture with TensorRT-LLM {trtllm}.",
            "",
            "```bash",
            f"huggingface-cli download {repo_id} --include '{folder}/*' --local-dir {repo_id.split('/')[-1]}",
            "```",
            "",
            f"Serving the checkpoint itself needs no engine: `yap serve --engine trt --model {repo_id}`.",
            "",
        ]
    )
