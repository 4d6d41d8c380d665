"""The quantization tools' own environment (`.venv-quant`), created once and reused.

llm-compressor and ModelOpt pin torch / transformers / compressed-tensors / setuptools versions that
conflict with vLLM's, so they live in a separate venv that the runners execute in. `ensure_env` is
idempotent: a stamp file records the requirements and the installed versions, and a second call with
the same requirements returns at once. Installs go through `uv` (bootstrapped into the venv; several
times faster than pip) fed with pip's own index configuration, falling back to pip.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import QuantEnvError

TORCH_VERSION = "2.13.0"
TOOLS = ("llmcompressor==0.14.0.1", "nvidia-modelopt==0.47.0", "requests")  # ModelOpt imports requests undeclared
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
VERSION_PACKAGES = ("torch", "transformers", "llmcompressor", "compressed-tensors", "nvidia-modelopt", "datasets")
# Imported once after install so their bytecode is cached: runner start-up drops by about half.
WARM_IMPORTS = (
    "transformers",
    "datasets",
    "llmcompressor",
    "llmcompressor.modifiers.quantization",
    "llmcompressor.modifiers.transform",
    "modelopt.torch.quantization",
    "modelopt.torch.export",
)
STAMP = ".yap-quant.json"

Log = Callable[[str], None]


@dataclass(frozen=True)
class QuantEnv:
    """A ready quantization environment and the versions installed in it."""

    root: Path
    requirements: tuple[str, ...]
    versions: Mapping[str, str]

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"


def requirements(gpu: bool) -> tuple[str, ...]:
    """torch (the CUDA build with a GPU, the +cpu build without) plus the tools."""
    return (f"torch=={TORCH_VERSION}" if gpu else f"torch=={TORCH_VERSION}+cpu", *TOOLS)


def has_gpu() -> bool:
    """A cheap check for an NVIDIA GPU (NVML or nvidia-smi; never imports torch)."""
    from .gpu import detect_nvml

    if detect_nvml() is not None:
        return True
    if shutil.which("nvidia-smi") is None:
        return False
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return out.returncode == 0 and "GPU" in out.stdout


def load_env(root: Path) -> QuantEnv:
    """The environment at `root`, or `QuantEnvError` saying how to create it."""
    try:
        stamp = json.loads((root / STAMP).read_text())
    except (OSError, ValueError):
        raise QuantEnvError(
            f"no quantization environment at {root}: run `yap quant env` (or `make quant-env`)"
        ) from None
    env = QuantEnv(root, tuple(stamp["requirements"]), dict(stamp["versions"]))
    if not env.python.exists():
        raise QuantEnvError(f"{root} is incomplete: run `yap quant env --force`")
    return env


def ensure_env(root: Path, *, gpu: bool | None = None, force: bool = False, log: Log = print) -> QuantEnv:
    """Create or update the environment at `root`; instant when its stamp matches the requirements.

    `gpu=None` accepts an up-to-date environment of either torch flavour and detects the GPU only when
    (re)installing; changed pins (a new tool version) reinstall into the same venv.
    """
    root = Path(root)
    if not force and (env := _up_to_date(root, gpu)) is not None:
        return env
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".yap-quant.lock"):
        if not force and (env := _up_to_date(root, gpu)) is not None:  # another process may have just built it
            return env
        started = time.perf_counter()
        want = requirements(has_gpu() if gpu is None else gpu)
        log(f"yap quant: creating {root} with {', '.join(want)}")
        _run([sys.executable, "-m", "venv", str(root)], "create the venv")
        python = root / "bin" / "python"
        _install(python, want, log)
        log("yap quant: caching bytecode of the tools (first import)")
        env_vars = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        _run([str(python), "-c", "import " + ", ".join(WARM_IMPORTS)], "import the tools", env=env_vars)
        versions = _versions(python)
        stamp = {"requirements": list(want), "versions": versions, "python": sys.version.split()[0]}
        (root / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
        log(f"yap quant: {root} ready in {time.perf_counter() - started:.0f} s ({_summary(versions)})")
        return QuantEnv(root, want, versions)


def _up_to_date(root: Path, gpu: bool | None) -> QuantEnv | None:
    """The existing environment when its stamp matches today's requirements (either torch flavour if `gpu` is None)."""
    try:
        env = load_env(root)
    except QuantEnvError:
        return None
    wanted = (requirements(True), requirements(False)) if gpu is None else (requirements(gpu),)
    return env if env.requirements in wanted else None


def _install(python: Path, want: tuple[str, ...], log: Log) -> None:
    cpu_torch = any(req.endswith("+cpu") for req in want)
    if _run([str(python), "-m", "pip", "install", "-q", "uv"], "bootstrap uv", check=False) == 0:
        uv = [str(python.parent / "uv"), "pip", "install", "--python", str(python)]
        base = [*uv, "--index-strategy", "unsafe-best-match", *_pip_index_args(python)]
        if _run([*base, *want], "install the tools with uv", check=False) == 0:
            return
        if cpu_torch and _run([*base, "--extra-index-url", CPU_TORCH_INDEX, *want], "retry", check=False) == 0:
            return
        log("yap quant: uv could not install the tools; trying pip")
    pip = [str(python), "-m", "pip", "install", "-q", *want]
    if _run(pip, "install the tools with pip", check=False) == 0:
        return
    if cpu_torch:
        # torch's "+cpu" builds live on PyTorch's own index; ask it only when the configured ones lack them.
        _run([*pip, "--extra-index-url", CPU_TORCH_INDEX], "install the tools with pip and the PyTorch CPU index")
        return
    raise QuantEnvError(f"installing {' '.join(want)} failed: see the pip output above")


def _pip_index_args(python: Path) -> list[str]:
    """pip's configured index-url / extra-index-url / find-links (config files and PIP_* env), as uv flags."""
    out = subprocess.run([str(python), "-m", "pip", "config", "list"], capture_output=True, text=True, check=False)
    pairs: list[tuple[str, str]] = []
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option in ("index-url", "extra-index-url", "find-links") and value:
            # `pip config list` prints multi-line values with literal "\n" separators
            for item in " ".join(shlex.split(value)).replace("\\n", " ").split():
                if (option, item) not in pairs:
                    pairs.append((option, item))
    return [arg for option, item in pairs for arg in (f"--{option}", item)]


def _versions(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        f"names = {list(VERSION_PACKAGES)!r}\n"
        "def v(n):\n"
        "    try:\n        return m.version(n)\n"
        "    except m.PackageNotFoundError:\n        return None\n"
        "print(json.dumps({n: v(n) for n in names if v(n)}))\n"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise QuantEnvError(f"reading versions in {python.parent.parent} failed: {out.stderr.strip()[-500:]}")
    return dict(json.loads(out.stdout))


def _summary(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items())


def _run(cmd: list[str], what: str, *, check: bool = True, env: Mapping[str, str] | None = None) -> int:
    code = subprocess.run(cmd, stdout=sys.stderr, env=None if env is None else dict(env), check=False).returncode
    if check and code != 0:
        raise QuantEnvError(f"could not {what} (exit {code}): {' '.join(cmd[:4])} ...")
    return code


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
