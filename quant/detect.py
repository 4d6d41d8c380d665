"""What a model already is: pre-quantized (and how), mixture-of-experts, or a tool classifier.

The checkpoint's own files decide first (`config.json` `quantization_config`, ModelOpt's
`hf_quant_config.json`, the experts fields, the architecture); the name is read only when no config
could be read (an offline hub id). `inspect_model` does the I/O; everything else here is pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

# config.json quant_method -> the format name the planner uses
_QUANT_METHODS = MappingProxyType(
    {
        "awq": "awq",
        "gptq": "gptq",
        "compressed-tensors": "compressed-tensors",
        "compressed_tensors": "compressed-tensors",
        "auto-round": "autoround",
        "autoround": "autoround",
        "intel/auto-round": "autoround",
        "fp8": "fp8",
        "modelopt": "modelopt",
        "bitsandbytes": "bitsandbytes",
        "mxfp4": "mxfp4",
    }
)
# name markers, checked in order (the TensorRT pairs first: "llama-trt-awq" is a ModelOpt export); the seed's
# 8-bit markers are fp8, 8bit, 8-bit, int8 and int-8
_TRT_MARKERS = ("trt", "tensorrt")
_TRT_PAIRED = ("awq", "fp8", "int8", "int-8", "8bit", "8-bit")
_NAME_MARKERS = (
    ("compressed-tensors", "compressed-tensors"),
    ("autoround", "autoround"),
    ("auto-round", "autoround"),
    ("gptq", "gptq"),
    ("w4a16", "compressed-tensors"),
    ("awq", "awq"),
)
_EXPERT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_NESTED_CONFIGS = ("text_config", "llm_config", "language_config")
_MOE_NAME = re.compile(r"moe|mixtral|\d+x\d+b|-a\d+(?:\.\d+)?b(?:\b|-|$)")
_TOOL_ARCH_SUFFIXES = ("ForSequenceClassification", "ForTokenClassification")


@dataclass(frozen=True)
class Prequantized:
    """A pre-quantized checkpoint: its format, a detail (quant_algo / bits) and where that was read."""

    format: str
    detail: str | None
    source: str


@dataclass(frozen=True)
class ModelInfo:
    """A model's name plus whatever of its config files could be read (None when none could)."""

    name: str
    config: Mapping[str, Any] | None = None
    hf_quant_config: Mapping[str, Any] | None = None
    config_source: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def short_name(self) -> str:
        return Path(self.name.rstrip("/")).name or self.name

    def configs(self) -> list[Mapping[str, Any]]:
        """The config and its nested language-model configs (empty without a config)."""
        if self.config is None:
            return []
        nested = [self.config[k] for k in _NESTED_CONFIGS if isinstance(self.config.get(k), Mapping)]
        return [self.config, *nested]

    @property
    def prequantized(self) -> Prequantized | None:
        """The pre-quantized format, from the config files first and the name only without them."""
        if self.hf_quant_config is not None:
            algo = (self.hf_quant_config.get("quantization") or {}).get("quant_algo")
            return Prequantized("modelopt", algo, "hf_quant_config.json")
        if self.config is not None:
            for cfg in self.configs():
                qc = cfg.get("quantization_config")
                if isinstance(qc, Mapping):
                    return _from_quantization_config(qc)
            return None
        return _from_name(self.short_name.lower())

    @property
    def num_experts(self) -> int | None:
        """The routed experts count from the config (None for dense models or without a config)."""
        for cfg in self.configs():
            for key in _EXPERT_FIELDS:
                value = cfg.get(key)
                if isinstance(value, int) and value > 1:
                    return value
        return None

    @property
    def moe(self) -> bool:
        """Mixture-of-experts: the config's experts fields decide; the name only without a config."""
        if self.config is not None:
            return self.num_experts is not None
        return bool(_MOE_NAME.search(self.short_name.lower()))

    @property
    def is_tool_classifier(self) -> bool:
        """A sequence/token classifier (the tool model), read from the config's architectures."""
        archs = self.config.get("architectures") if self.config else None
        return any(str(a).endswith(_TOOL_ARCH_SUFFIXES) for a in archs or ())

    @property
    def model_type(self) -> str | None:
        return str(self.config["model_type"]) if self.config and "model_type" in self.config else None


def _from_quantization_config(qc: Mapping[str, Any]) -> Prequantized:
    method = str(qc.get("quant_method", "unknown")).lower()
    fmt = _QUANT_METHODS.get(method, method)
    detail: str | None = None
    if fmt == "modelopt":
        detail = qc.get("quant_algo")
    elif fmt == "compressed-tensors":
        groups: Mapping[str, Any] = qc.get("config_groups") or {}
        first: Any = next(iter(groups.values()), None)
        weights = first.get("weights") if isinstance(first, Mapping) else None
        detail = qc.get("format")
        if isinstance(weights, Mapping):
            detail = f"{detail}, {weights.get('type', '')}{weights.get('num_bits', '')} weights"
    elif "bits" in qc:
        detail = f"{qc['bits']}-bit"
    return Prequantized(fmt, detail, "config.json")


def _from_name(name: str) -> Prequantized | None:
    if any(m in name for m in _TRT_MARKERS):
        for pair in _TRT_PAIRED:
            if pair in name:
                return Prequantized("modelopt", pair, "name")
    for marker, fmt in _NAME_MARKERS:
        if marker in name:
            return Prequantized(fmt, None, "name")
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def inspect_model(
    name: str, *, revision: str | None = None, endpoint: str | None = None, token: str | None = None
) -> ModelInfo:
    """Read `config.json` (and `hf_quant_config.json` when present) from a local dir, the HF cache, or the Hub.

    One request per file and no retries, so an offline machine answers at once. A hub id that cannot
    be read (offline, gated, missing) gives a `ModelInfo` without config: detection falls back to the
    name, and the note says why.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return ModelInfo(name, _read_json(path / "config.json"), _read_json(path / "hf_quant_config.json"), "local")
    try:
        config = _hub_json(name, "config.json", revision, endpoint, token)
        if config is None:
            return ModelInfo(name, notes=("no config.json on the Hub: detected from the name only",))
        quant = _hub_json(name, "hf_quant_config.json", revision, endpoint, token)
    except Exception as exc:
        return ModelInfo(name, notes=(f"config.json not readable ({type(exc).__name__}): detected from the name only",))
    return ModelInfo(name, config, quant, "hub")


def _hub_json(
    repo: str, filename: str, revision: str | None, endpoint: str | None, token: str | None
) -> dict[str, Any] | None:
    """A small JSON file of a hub model: from the HF cache if there, else one GET; None when the repo lacks it."""
    from huggingface_hub import constants, get_session, hf_hub_url, hf_raise_for_status, try_to_load_from_cache
    from huggingface_hub.utils import build_hf_headers

    cached = try_to_load_from_cache(repo, filename, revision=revision)
    if isinstance(cached, str):
        return _read_json(Path(cached))
    if constants.HF_HUB_OFFLINE:
        raise ConnectionError("HF_HUB_OFFLINE is set")
    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
    response = get_session().get(url, headers=build_hf_headers(token=token), timeout=10, follow_redirects=True)
    if response.status_code == 404 and response.headers.get("X-Error-Code") == "EntryNotFound":
        return None
    hf_raise_for_status(response)
    data = response.json()
    return data if isinstance(data, dict) else None
