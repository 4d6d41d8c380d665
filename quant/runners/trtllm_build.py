"""The legacy engine step: `trtllm-build` on the TensorRT-LLM checkpoint, only when asked and installed.

TensorRT-LLM's PyTorch backend loads the quantized HF checkpoint directly and upstream has deprecated
`trtllm-build`, so this runs only with `LEGACY_ENGINE=1` and when the command is on PATH; otherwise
the returned record says why it was skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RunnerError

ENGINE_DIR = "trtllm-engine"
CHECKPOINT_DIR = "trtllm-ckpt"


@dataclass(frozen=True)
class EngineLimits:
    """What the engine is compiled for (TensorRT engines are fixed-shape)."""

    max_batch_size: int
    max_input_len: int
    max_seq_len: int


def build_engine(
    artifact: Path,
    *,
    enabled: bool,
    limits: EngineLimits,
    log: Path,
    which: Callable[[str], str | None] = shutil.which,
) -> dict[str, Any]:
    """Compile `artifact/trtllm-ckpt` into `artifact/trtllm-engine`, or say why not."""
    if not enabled:
        return {
            "built": False,
            "reason": "LEGACY_ENGINE is not set: TensorRT-LLM's PyTorch backend loads the HF checkpoint directly "
            "(set LEGACY_ENGINE=1 to also compile an engine with trtllm-build)",
        }
    exe = which("trtllm-build")
    if exe is None:
        return {
            "built": False,
            "reason": "LEGACY_ENGINE=1 but trtllm-build is not on PATH: run the build where TensorRT-LLM is "
            "installed (the TRT image) to compile an engine",
        }
    checkpoint = artifact / CHECKPOINT_DIR
    if not (checkpoint / "config.json").exists():
        return {"built": False, "reason": f"no TensorRT-LLM checkpoint in {CHECKPOINT_DIR}/ to compile"}
    args = [
        "--checkpoint_dir", CHECKPOINT_DIR,
        "--output_dir", ENGINE_DIR,
        "--max_batch_size", str(limits.max_batch_size),
        "--max_input_len", str(limits.max_input_len),
        "--max_seq_len", str(limits.max_seq_len),
        "--gemm_plugin", "auto",
        "--workers", "1",
    ]  # fmt: skip
    started = time.perf_counter()
    with open(log, "a") as log_file:
        code = subprocess.run([exe, *args], cwd=artifact, stdout=log_file, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RunnerError(f"trtllm-build exited with status {code}", str(log))
    return {
        "built": True,
        "dir": ENGINE_DIR,
        "command": ["trtllm-build", *args],
        "versions": tensorrt_llm_versions(exe),
        "seconds": round(time.perf_counter() - started, 3),
    }


def tensorrt_llm_versions(exe: str) -> dict[str, str]:
    """tensorrt_llm and CUDA versions of the Python that owns `exe` (read from its shebang)."""
    try:
        first = Path(exe).read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        first = ""
    python = first[2:].strip().split()[0] if first.startswith("#!") and first[2:].strip() else None
    unknown = {"tensorrt_llm": "unknown", "cuda": "unknown"}
    if python is None:
        return unknown
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        "try:\n    out['tensorrt_llm'] = m.version('tensorrt_llm')\nexcept Exception:\n    pass\n"
        "try:\n    import torch\n    out['cuda'] = torch.version.cuda or 'none'\nexcept Exception:\n    pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, check=False)
        found = json.loads(out.stdout) if out.returncode == 0 else {}
    except (OSError, ValueError, subprocess.TimeoutExpired):
        found = {}
    return {**unknown, **{k: str(v) for k, v in found.items()}}
