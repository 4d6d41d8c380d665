"""Helpers for the TensorRT-LLM adapter's tests: the CPU stand-in's location, settings, engine-dir builders."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from yap_engines.settings import EngineSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
STAND_INS = REPO_ROOT / "tests" / "stand_ins"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def forget_trt() -> None:
    """Remove the stand-in `tensorrt_llm` and the adapter module bound to it from `sys.modules`."""
    for name in list(sys.modules):
        if name == "tensorrt_llm" or name.startswith("tensorrt_llm.") or name == "yap_engines.adapters.trt":
            del sys.modules[name]
    import yap_engines.adapters

    vars(yap_engines.adapters).pop("trt", None)


def trt_settings(model: Path, **fields: Any) -> EngineSettings:
    """Settings for the "trt" engine on `model`; `fields` are `EngineSettings` fields."""
    return EngineSettings(engine="trt", model=str(model), **fields)


def make_engine_dir(dest: Path, demo_model_dir: Path, **build_config: int) -> Path:
    """A prebuilt-engine dir for the demo model: config.json (pretrained_config + build_config), rank0.engine.

    The stand-in never reads the engine file; the tokenizer files are copied next to it, as a
    deployment does so that TensorRT-LLM finds the tokenizer.
    """
    dest.mkdir(parents=True)
    hf_config = json.loads((demo_model_dir / "config.json").read_text())
    build = {"max_batch_size": 4, "max_input_len": 6000, "max_seq_len": 6400, "max_num_tokens": 8192, **build_config}
    config = {
        "version": "1.2.1",
        "pretrained_config": {
            "architecture": "LlamaForCausalLM",
            "dtype": "bfloat16",
            "vocab_size": hf_config["vocab_size"],
            "hidden_size": hf_config["hidden_size"],
            "num_hidden_layers": hf_config["num_hidden_layers"],
            "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1},
        },
        "build_config": build,
    }
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    (dest / "rank0.engine").write_bytes(b"")
    for name in TOKENIZER_FILES:
        if (demo_model_dir / name).exists():
            shutil.copy(demo_model_dir / name, dest / name)
    return dest
