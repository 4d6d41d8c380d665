"""Offline builders: the embedded default assistant (SmolLM2), the tiny test model, the demo tool classifier.

Nothing here needs a model hub: every artifact is built from what installed packages ship.
"""

from __future__ import annotations

from ..settings import DEMO_CHAT_NAME, DEMO_MODEL_ALIAS, DEMO_TOOL_NAME, SMOLLM2_NAME
from .smollm2 import (
    SMOLLM2_GGUF,
    SMOLLM2_INSTALL,
    SMOLLM2_PACKAGE,
    SMOLLM2_PACKAGE_VERSION,
    build_offline_model,
    build_smollm2,
    is_smollm2_built,
    load_gguf_model,
    read_provenance,
    smollm2_gguf,
)
from .tiny_chat import (
    CHATML_TEMPLATE,
    DEMO_CHAT_MAX_POSITIONS,
    SPECIAL_TOKENS,
    build_demo_chat,
    build_demo_tokenizer,
    is_built,
)
from .tool_classifier import TOOL_LABELS, build_demo_tool, held_out_accuracy, minilm_dir

__all__ = [
    "CHATML_TEMPLATE",
    "DEMO_CHAT_MAX_POSITIONS",
    "DEMO_CHAT_NAME",
    "DEMO_MODEL_ALIAS",
    "DEMO_TOOL_NAME",
    "SMOLLM2_GGUF",
    "SMOLLM2_INSTALL",
    "SMOLLM2_NAME",
    "SMOLLM2_PACKAGE",
    "SMOLLM2_PACKAGE_VERSION",
    "SPECIAL_TOKENS",
    "TOOL_LABELS",
    "build_demo_chat",
    "build_demo_tokenizer",
    "build_demo_tool",
    "build_offline_model",
    "build_smollm2",
    "held_out_accuracy",
    "is_built",
    "is_smollm2_built",
    "load_gguf_model",
    "minilm_dir",
    "read_provenance",
    "smollm2_gguf",
]
