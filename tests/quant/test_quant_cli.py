"""The command line as the Makefile calls it: empty MODEL/QUANT values, the demo model by default."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from quant_support import REPO

from quant.cli import add_quant_commands


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="yap")
    add_quant_commands(root.add_subparsers(dest="command", required=True))
    return root


def test_makefile_arguments_with_unset_variables_parse() -> None:
    # build-engine: yap quant build --model $(MODEL) --backend $(ENGINE) --mode $(QUANT) $(if $(SM),--sm $(SM)) ...
    args = parser().parse_args(["quant", "build", "--model", "--backend", "vllm", "--mode", "--push"])
    assert (args.model, args.backend, args.mode, args.sm, args.push) == (None, "vllm", None, None, "quant")
    args = parser().parse_args(["quant", "build", "--model", "Qwen/Qwen3-0.6B", "--backend", "--mode", "fp8",
                                "--sm", "90"])  # fmt: skip
    assert (args.model, args.backend, args.mode, args.sm, args.push) == ("Qwen/Qwen3-0.6B", None, "fp8", "90", None)


def test_build_without_a_model_builds_the_demo_model(tmp_path: Path) -> None:
    env = {**os.environ, "YAP_ENGINES_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    env.pop("MODEL", None)
    cmd = [sys.executable, "-m", "quant.cli", "build", "--model", "--backend", "vllm", "--mode", "none"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "demo-chat" / "config.json").is_file()
    assert out.stdout.startswith("nothing to build (mode none: the model is served unquantized)")


def test_a_backend_quant_cannot_build_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "YAP_ENGINES_DIR": str(tmp_path), "PYTHONPATH": str(REPO), "ENGINE": "fake"}
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    out = subprocess.run([sys.executable, "-m", "quant", "plan", "--model", str(model), "--sm", "90"], env=env,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 2
    assert "refused: ENGINE/--backend must be one of vllm, trt for quantized builds (got 'fake')" in out.stderr
