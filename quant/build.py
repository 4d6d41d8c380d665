"""`build(settings, gpu)`: plan, then on a cache miss run the runner (and the legacy engine step), record metadata.

Everything that decides — the plan, the cache key, the metadata — happens here in the main process;
the quantization itself runs in `.venv-quant` through `quant.runner`.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifacts import ArtifactStore, build_key, fingerprint_dir, hash_files
from .calibration import resolve
from .detect import ModelInfo, inspect_model
from .env import QuantEnv, ensure_env
from .gpu import Gpu
from .metadata import LOG_FILE, METADATA_FILE, BuildMetadata
from .plan import QuantPlan, Role, plan
from .progress import Progress
from .runner import RunnerOutput, run_runner
from .runners.trtllm_build import EngineLimits, build_engine
from .settings import QuantSettings

DEMO_MODEL = "demo-chat"
_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class BuildResult:
    """The plan, and the artifact dir with its metadata (None when the plan builds nothing)."""

    plan: QuantPlan
    path: Path | None
    metadata: BuildMetadata | None
    cached: bool


def model_name(settings: QuantSettings) -> str:
    """`MODEL`, or the demo model's directory when unset."""
    return settings.model or str(settings.engines_dir / DEMO_MODEL)


def inspect(settings: QuantSettings) -> ModelInfo:
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    return inspect_model(model_name(settings), revision=settings.revision, endpoint=settings.hf_endpoint, token=token)


def make_plan(settings: QuantSettings, gpu: Gpu | None, *, role: Role = "chat") -> QuantPlan:
    """The plan for these settings on this GPU (None = no GPU), detecting from the model's own files."""
    return plan(
        inspect(settings),
        settings.backend,
        settings.mode,
        gpu.sm if gpu else None,
        override=settings.quantization,
        role=role,
        kv_cache_dtype=settings.trt_kv_cache_dtype if settings.backend == "trt" else None,
        awq_block_size=settings.trt_awq_block_size,
        smoothquant_alpha=settings.trt_smoothquant_alpha,
    )


def calibration_request(p: QuantPlan, settings: QuantSettings) -> dict[str, Any] | None:
    """What calibration the runner is asked for (it reports back what it actually used)."""
    if not p.calibration or p.tool is None:
        return None
    if p.tool == "llmcompressor":
        sizes = (settings.awq_nsamples, settings.awq_seqlen, 1)
    else:
        sizes = (settings.trt_calib_size, settings.trt_calib_seqlen, settings.trt_calib_batch_size)
    source = resolve(settings.calib_dataset(p.tool)).as_dict()
    return {"source": source, "nsamples": sizes[0], "seqlen": sizes[1], "batch_size": sizes[2]}


def model_revision(model: str, settings: QuantSettings) -> tuple[str, list[str]]:
    """A revision that pins the weights: a content fingerprint for a local dir, the commit sha on the Hub."""
    path = Path(model)
    if path.is_dir():
        return fingerprint_dir(path), []
    revision = settings.revision
    if revision and _SHA.fullmatch(revision):
        return revision, []
    try:
        from huggingface_hub import HfApi

        token = settings.hf_token.get_secret_value() if settings.hf_token else None
        sha = HfApi(endpoint=settings.hf_endpoint, token=token).model_info(model, revision=revision).sha
        if sha:
            return sha, []
    except Exception as exc:
        return revision or "main", [f"revision not resolved on the Hub ({type(exc).__name__}); keyed on the name"]
    return revision or "main", []


@dataclass(frozen=True)
class PreparedBuild:
    """A quantize plan made concrete: its cache key, destination and runner job (nothing has run yet)."""

    settings: QuantSettings
    plan: QuantPlan
    gpu: Gpu | None
    model: str
    revision: str
    key: str
    dest: Path
    staging: Path
    job: dict[str, Any]
    notes: list[str]


def build(
    settings: QuantSettings, gpu: Gpu | None, *, progress: Progress | None = None, env: QuantEnv | None = None
) -> BuildResult:
    """Build (or find in the cache) the artifact for `settings` on `gpu`."""
    return build_many([(settings, gpu)], progress=progress, env=env)[0]


def build_many(
    requests: Sequence[tuple[QuantSettings, Gpu | None]],
    *,
    progress: Progress | None = None,
    env: QuantEnv | None = None,
) -> list[BuildResult]:
    """Build several variants (e.g. modes), each for its GPU; cache misses that use the same tool share one
    runner process, so the tool is imported once. Results come back in the order of `requests`."""
    progress = progress or Progress()
    results: dict[int, BuildResult] = {}
    pending: dict[Path, PreparedBuild] = {}
    wanted: dict[int, Path] = {}
    for index, (settings, gpu) in enumerate(requests):
        model = model_name(settings)
        if settings.model is None:
            from yap_engines.demo import build_demo_chat

            build_demo_chat(model)
        p = make_plan(settings, gpu)
        if p.action != "quantize":
            results[index] = BuildResult(p, None, None, cached=False)
            continue
        env = env or ensure_env(settings.quant_venv, log=progress.line)
        item = prepare(settings, p, model, env, gpu)
        cached = None if settings.force_rebuild else ArtifactStore(settings.engines_dir).cached(item.dest, item.key)
        if cached is not None:
            progress.line(f"cache hit: {item.dest} (FORCE_REBUILD=1 to rebuild)")
            results[index] = BuildResult(p, item.dest, cached, cached=True)
        else:
            wanted[index] = item.dest
            pending.setdefault(item.dest, item)
    built = _run_pending(list(pending.values()), env, progress) if pending and env else {}
    results.update({index: built[dest] for index, dest in wanted.items()})
    return [results[i] for i in range(len(requests))]


def prepare(settings: QuantSettings, p: QuantPlan, model: str, env: QuantEnv, gpu: Gpu | None) -> PreparedBuild:
    """Key the build on (model + revision, plan, calibration request, tool versions, SM) and write its job."""
    calibration = calibration_request(p, settings)
    revision, notes = model_revision(model, settings)
    local = Path(model).is_dir()
    identity = "local:" + Path(model).resolve().name if local else model
    key = build_key(model=identity, revision=revision, plan=p.model_dump(exclude={"model"}),
                    calibration=calibration, versions=dict(env.versions), sm=p.sm)  # fmt: skip
    store = ArtifactStore(settings.engines_dir)
    dest = store.dir_for(model, key)
    staging = dest.with_name(dest.name + ".partial")
    job = {
        "model": str(Path(model).resolve()) if local else model,
        "revision": None if local else (revision if _SHA.fullmatch(revision) else settings.revision),
        "output_dir": str(staging),
        "log": str(staging / LOG_FILE),
        "method": p.method,
        "scheme": p.scheme,
        "preset": p.recipe[0] if p.recipe else None,
        "ignore": list(p.ignore),
        "awq_block_size": p.awq_block_size,
        "smoothquant_alpha": p.smoothquant_alpha,
        "group_size": p.group_size,
        "kv_cache_dtype": p.kv_cache_dtype,
        "calibration": calibration,
    }
    return PreparedBuild(settings, p, gpu, model, revision, key, dest, staging, job, notes)


def _run_pending(items: list[PreparedBuild], env: QuantEnv, progress: Progress) -> dict[Path, BuildResult]:
    done: dict[Path, BuildResult] = {}
    for tool in ("llmcompressor", "modelopt"):
        group = [item for item in items if item.plan.tool == tool]
        if not group:
            continue
        for item in group:
            ArtifactStore(item.settings.engines_dir).staging(item.dest)
            progress.line(f"building {item.plan.method} for {item.plan.backend} ({item.plan.reason}) into {item.dest}")
        outputs = run_runner(env, tool, [item.job for item in group], progress=progress)
        for item, out in zip(group, outputs, strict=True):
            done[item.dest] = _finish(item, out, env, progress)
    return done


def _finish(item: PreparedBuild, out: RunnerOutput, env: QuantEnv, progress: Progress) -> BuildResult:
    """Legacy engine step (TRT), metadata from what the runner reported, then move the build into place.

    Durations are the runner's stages for this job (the tool's import counts for the first job of a run)."""
    p, result, staging = item.plan, out.result, item.staging
    durations = dict(result.get("durations", {}))
    legacy = None
    if p.backend == "trt":
        s = item.settings
        limits = EngineLimits(s.trt_max_batch_size, s.trt_max_input_len, s.trt_max_seq_len)
        legacy = build_engine(staging, enabled=s.legacy_engine, limits=limits, log=staging / LOG_FILE)
        progress.line(f"legacy engine: {'built' if legacy['built'] else 'skipped: ' + legacy['reason']}")
        if legacy["built"]:
            durations["legacy_engine"] = legacy["seconds"]
    durations["total"] = round(sum(durations.values()), 3)
    meta = BuildMetadata(
        key=item.key,
        model=item.model,
        revision=item.revision,
        plan=p,
        sm=p.sm,
        gpu=item.gpu.name if item.gpu else None,
        device=result.get("device", "unknown"),
        versions={**result.get("versions", {}), "yap": _yap_version(), "python": platform.python_version()},
        calibration=result.get("calibration"),
        recipe=list(result.get("recipe", [])),
        recipe_yaml=result.get("recipe_yaml"),
        durations=durations,
        files=hash_files(staging, frozenset({METADATA_FILE, LOG_FILE})),
        runner={"module": out.module, "environment": Path(env.root).name, "log": LOG_FILE},
        trtllm_checkpoint=result.get("trtllm_checkpoint"),
        legacy_engine=legacy,
        notes=item.notes,
    )
    meta.write(staging)
    ArtifactStore(item.settings.engines_dir).commit(staging, item.dest)
    progress.line(f"built {item.dest} in {durations['total']:.1f} s")
    return BuildResult(p, item.dest, meta, cached=False)


def _yap_version() -> str:
    try:
        return importlib.metadata.version("yap")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
