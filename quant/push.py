"""Push a build to the Hugging Face Hub: the checkpoint (`--push-quant`) or this GPU's engine (`--push-engine`).

One commit each, with a generated model card and `build_metadata.json`. The token comes only from
`HF_TOKEN` / `HUGGINGFACE_HUB_TOKEN` (through `QuantSettings`) and is handed to `HfApi` in process:
it never appears on a command line or in a log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .card import engine_card, model_card
from .errors import PushError
from .metadata import LOG_FILE, METADATA_FILE, BuildMetadata
from .progress import Progress
from .runners.trtllm_build import ENGINE_DIR
from .settings import QuantSettings

PushWhat = Literal["quant", "engine"]
ENGINES_PREFIX = "trt-llm/engines"


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    commit_url: str
    files: tuple[str, ...]
    private: bool


def engine_folder(meta: BuildMetadata) -> str:
    """`sm90_trt-llm-1.2.1_cuda12.9`: engines only run on the GPU and versions they were built for."""
    versions = (meta.legacy_engine or {}).get("versions", {})
    sm = f"sm{meta.sm}" if meta.sm is not None else "sm-unknown"
    return f"{sm}_trt-llm-{versions.get('tensorrt_llm', 'unknown')}_cuda{versions.get('cuda', 'unknown')}"


def _files(root: Path, skip_dirs: tuple[str, ...] = ()) -> list[Path]:
    return [
        p
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.name != LOG_FILE
        and p.relative_to(root).as_posix() != "README.md"
        and not p.relative_to(root).as_posix().startswith(skip_dirs)
    ]


def push_artifact(
    artifact: Path,
    *,
    what: PushWhat,
    settings: QuantSettings,
    repo_id: str | None = None,
    progress: Progress | None = None,
) -> PushResult:
    """Publish `artifact` (a build dir). Raises `PushError` naming the setting to fix."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    progress = progress or Progress()
    try:
        meta = BuildMetadata.read(artifact)
    except (OSError, ValueError):
        raise PushError(
            f"{artifact} is not a build (no readable {METADATA_FILE}): build it with `yap quant build`"
        ) from None
    repo = repo_id or settings.hf_push_repo_id
    if not repo:
        raise PushError("set HF_PUSH_REPO_ID=owner/name (or pass --repo-id) to say where to push")
    if settings.hf_token is None:
        raise PushError("set HF_TOKEN (or HUGGINGFACE_HUB_TOKEN) in the environment; tokens are never read from flags")
    api = HfApi(endpoint=settings.hf_endpoint, token=settings.hf_token.get_secret_value(), library_name="yap")

    operations: list[CommitOperationAdd] = []
    try:
        if what == "quant":
            for path in _files(artifact, skip_dirs=(ENGINE_DIR + "/",)):
                operations.append(CommitOperationAdd(path.relative_to(artifact).as_posix(), path))
            operations.append(CommitOperationAdd("README.md", model_card(meta, repo).encode()))
            message = f"Add {meta.plan.method} checkpoint for {meta.plan.backend} (yap build {meta.key})"
            with progress.stage(f"create repo {repo} ({'private' if settings.hf_push_private else 'public'})"):
                api.create_repo(repo, private=settings.hf_push_private, exist_ok=True)
        else:
            engine = artifact / ENGINE_DIR
            if not (meta.legacy_engine or {}).get("built") or not engine.is_dir():
                raise PushError(
                    f"{artifact} has no compiled engine: build with LEGACY_ENGINE=1 where trtllm-build is installed, "
                    "or push the checkpoint with --push-quant"
                )
            if not api.repo_exists(repo):
                raise PushError(
                    f"{repo} does not exist: --push-engine adds to an existing repo, push --push-quant first"
                )
            folder = f"{ENGINES_PREFIX}/{engine_folder(meta)}"
            for path in _files(engine):
                operations.append(CommitOperationAdd(f"{folder}/{path.relative_to(engine).as_posix()}", path))
            operations.append(CommitOperationAdd(f"{folder}/{METADATA_FILE}", artifact / METADATA_FILE))
            operations.append(CommitOperationAdd(f"{folder}/README.md", engine_card(meta, repo, folder).encode()))
            message = f"Add TensorRT-LLM engine {engine_folder(meta)} (yap build {meta.key})"
        size = sum(Path(op.path_or_fileobj).stat().st_size for op in operations if isinstance(op.path_or_fileobj, Path))
        with progress.stage(
            f"upload {len(operations)} files ({size / 2**20:.1f} MiB) to {repo}", total=len(operations)
        ) as advance:
            commit = api.create_commit(repo, operations, commit_message=message)
            advance(len(operations))
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise PushError(f"pushing to {repo} at {settings.hf_endpoint} failed (HTTP {status}): {exc}") from None
    return PushResult(repo, commit.commit_url, tuple(op.path_in_repo for op in operations), settings.hf_push_private)
