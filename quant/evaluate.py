"""`evaluate(artifact, against)`: how much worse did quantization make the model? A quality report.

Measured on the held-out text shipped in `quant.heldout` (never used for calibration): perplexity of the
artifact and of its base, top-1 next-token agreement with the base, and the mean KL divergence
KL(base || artifact) per token; plus size on disk and the build time from `build_metadata.json`. The
numbers are computed by the `quant.runners.evaluate` runner in `.venv-quant` (see its docstring for the
path each format takes and why vLLM is not used); the report names that path and the kernels it could
not use. Each figure comes with its 95% interval, top-1 also conditioned on the base's clear choices, and the
verdict against the format's bound (`quant.bounds`; none for a format without one). `record` stores the
report in the build's metadata, from where a push puts it in the model card.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .bounds import Figures, UnknownFormatError, bound_key, judge
from .detect import inspect_model
from .env import QuantEnv, ensure_env
from .errors import QuantError
from .heldout import HELDOUT_NAME, HELDOUT_TEXT, heldout_sha256
from .metadata import LOG_FILE, METADATA_FILE, BuildMetadata, utc_now
from .progress import Progress
from .runner import run_runner
from .settings import QuantSettings

# Not part of the served checkpoint: the build's own records and the legacy TensorRT-LLM checkpoint copy.
NOT_SERVED = frozenset({LOG_FILE, METADATA_FILE, "README.md"})
# The keys `yap quant eval --json` always prints.
JSON_KEYS = ("perplexity", "base_perplexity", "top1_agreement", "kl", "size_bytes", "path")


class QualityReport(BaseModel):
    """One row of the quality table: what was measured, on what text, by which path."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    artifact: str
    base: str | None
    method: str | None
    format: str
    perplexity: float
    base_perplexity: float | None
    top1_agreement: float | None
    kl: float | None
    size_bytes: int
    base_size_bytes: int | None
    build_seconds: float | None
    path: str
    kernels_unavailable: list[str]
    tokens: int
    window: int
    compute_dtype: str
    text: str = HELDOUT_NAME
    text_sha256: str = Field(default_factory=heldout_sha256)
    device: str
    seconds: float
    generations: list[str] = Field(default_factory=list)
    # 95% intervals and the margin-conditioned top-1 (absent in reports made before they were measured)
    delta_interval: tuple[float, float] | None = None
    top1_interval: float | None = None
    margin_top1: float | None = None
    margin_tokens: int | None = None
    margin: float | None = None
    artifact_dtype: str | None = None
    # the format's bound (quant.bounds) and the verdict against it; None for a format without a bound
    bound_key: str | None = None
    verdict: dict[str, Any] | None = None
    evaluated_at: str = Field(default_factory=utc_now)

    @property
    def passed(self) -> bool | None:
        """Whether the report meets its format's bound (None: the format has none)."""
        return None if self.verdict is None else bool(self.verdict["passed"])

    @property
    def delta(self) -> float | None:
        """Relative perplexity change against the base (0.03 = 3% worse)."""
        if self.base_perplexity is None:
            return None
        return self.perplexity / self.base_perplexity - 1.0

    def summary(self) -> dict[str, Any]:
        """The `--json` object: the fixed keys first, then everything else."""
        data = self.model_dump(mode="json")
        return {**{k: data[k] for k in JSON_KEYS}, **data, "delta": self.delta}

    def table_row(self, name: str) -> str:
        """One markdown row of `table`: size, build time, delta with its interval, KL, top-1 with its interval,
        margin-conditioned top-1, the bound and the verdict."""

        def pct(value: float | None, signed: bool = False) -> str:
            return "-" if value is None else format(value * 100, "+.2f" if signed else ".2f")

        low, high = self.delta_interval or (None, None)
        build = "-" if self.build_seconds is None else f"{self.build_seconds:.0f}"
        top1 = pct(self.top1_agreement) + (f" ± {pct(self.top1_interval)}" if self.top1_interval is not None else "")
        verdict = "no bound" if self.verdict is None else "pass" if self.passed else "FAIL"
        return (
            f"| {name} | {self.size_bytes / 1e6:.1f} MB | {build} | {pct(self.delta, True)}% "
            f"[{pct(low, True)}, {pct(high, True)}] | {'-' if self.kl is None else f'{self.kl:.4f}'} | {top1} | "
            f"{pct(self.margin_top1)} | {self.bound_key or '-'} | {verdict} |"
        )

    def row(self) -> str:
        """One human-readable line."""
        parts = [
            f"{self.method or 'base'}: size {self.size_bytes / 1e6:.1f} MB",
            f"build {self.build_seconds:.1f} s" if self.build_seconds is not None else "build -",
            f"perplexity {self.perplexity:.3f}",
        ]
        if self.base_perplexity is not None and self.delta is not None:
            parts.append(f"(base {self.base_perplexity:.3f}, {self.delta * 100:+.2f}%)")
        if self.delta_interval is not None:
            low, high = self.delta_interval
            parts.append(f"95% [{low * 100:+.2f}%, {high * 100:+.2f}%]")
        if self.top1_agreement is not None and self.kl is not None:
            top1 = f"top-1 {self.top1_agreement * 100:.2f}%"
            if self.top1_interval is not None:
                top1 += f" ± {self.top1_interval * 100:.2f}"
            parts += [top1, f"KL {self.kl:.4f}"]
        if self.margin_top1 is not None:
            parts.append(f"margin top-1 {self.margin_top1 * 100:.2f}% ({self.margin_tokens} tokens)")
        if self.verdict is not None:
            parts.append(f"bound {self.bound_key}: {'pass' if self.passed else 'FAIL'}")
        return ", ".join(parts) + f" [{self.path}; {self.tokens} tokens, {self.compute_dtype} compute]"


TABLE_HEADER = (
    "| format | size | build s | perplexity Δ [95%] | KL | top-1 % ± 95% | margin top-1 % | bound | pass |",
    "|---|---|---|---|---|---|---|---|---|",
)


def table(rows: dict[str, QualityReport]) -> list[str]:
    """The quality table in markdown: one row per named report (`TABLE_HEADER` first)."""
    return [*TABLE_HEADER, *(report.table_row(name) for name, report in rows.items())]


def checkpoint_size(path: Path) -> int:
    """Bytes of the checkpoint a server loads: the top-level files, without the build's records."""
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file() and p.name not in NOT_SERVED)


def _kind(path: Path) -> str:
    pre = inspect_model(str(path)).prequantized
    if pre is None:
        return "plain"
    if pre.format in ("compressed-tensors", "modelopt"):
        return pre.format
    raise QuantError(
        f"{path} is {pre.format}: the quality report covers compressed-tensors (llm-compressor) and ModelOpt "
        "checkpoints and unquantized models"
    )


def evaluate(
    artifact: Path,
    against: str | None = None,
    *,
    settings: QuantSettings | None = None,
    progress: Progress | None = None,
    env: QuantEnv | None = None,
) -> QualityReport:
    """Measure `artifact` (a build dir or any local checkpoint) against `against` (default: the model the build
    was made from, per its metadata; none for a checkpoint without metadata)."""
    return evaluate_many([(Path(artifact), against)], settings=settings, progress=progress, env=env)[0]


def evaluate_many(
    items: list[tuple[Path, str | None]],
    *,
    settings: QuantSettings | None = None,
    progress: Progress | None = None,
    env: QuantEnv | None = None,
    prompts: tuple[str, ...] = (),
    on_report: Callable[[int, QualityReport], None] | None = None,
) -> list[QualityReport]:
    """`evaluate` for several artifacts in one runner process (the tools and a shared base load once).
    `prompts` are answered greedily by each artifact (`QualityReport.generations`); `on_report(index, report)`
    gets each report as soon as it is measured (so a long run keeps the rows it finished)."""
    settings = settings or QuantSettings.from_env()
    progress = progress or Progress()
    prepared = [_prepare(Path(artifact), against) for artifact, against in items]
    env = env or ensure_env(settings.quant_venv, log=progress.line)
    with tempfile.TemporaryDirectory(prefix="yap-quant-eval-") as tmp:
        jobs = [
            _job(artifact, base, _kind(artifact), settings, Path(tmp) / f"eval-{index}.log", prompts)
            for index, (artifact, base, _) in enumerate(prepared)
        ]

        def measured(index: int, result: dict[str, Any]) -> None:
            if on_report is not None:
                on_report(index, _report(*prepared[index], result))

        outputs = run_runner(env, "evaluate", jobs, progress=progress, on_result=measured)
        for index, (artifact, _, _) in enumerate(prepared):
            _keep_log(Path(tmp) / f"eval-{index}.log", artifact)
    return [
        _report(artifact, base, meta, out.result) for (artifact, base, meta), out in zip(prepared, outputs, strict=True)
    ]


def evaluate_floor(
    base: Path,
    *,
    settings: QuantSettings | None = None,
    progress: Progress | None = None,
    env: QuantEnv | None = None,
) -> QualityReport:
    """The evaluation floor: the bf16 base computing in bf16 against itself computing in float32 (what 16-bit
    compute alone changes), judged against the `eval_floor` bound."""
    settings = settings or QuantSettings.from_env()
    progress = progress or Progress()
    base = Path(base).resolve()
    env = env or ensure_env(settings.quant_venv, log=progress.line)
    with tempfile.TemporaryDirectory(prefix="yap-quant-eval-") as tmp:
        job = {**_job(base, str(base), "plain", settings, Path(tmp) / "floor.log", ()), "artifact_dtype": "bfloat16"}
        out = run_runner(env, "evaluate", [job], progress=progress)[0]
    return _report(base, str(base), None, out.result, floor=True)


def _job(
    artifact: Path, base: str | None, kind: str, settings: QuantSettings, log: Path, prompts: tuple[str, ...]
) -> dict[str, Any]:
    return {
        "artifact": str(artifact.resolve()),
        "base": base,
        "kind": kind,
        "text": HELDOUT_TEXT,
        "max_tokens": settings.eval_tokens,
        "window": settings.eval_window,
        "dtype": settings.eval_dtype,
        "log": str(log),
        "prompts": list(prompts),
    }


def _prepare(artifact: Path, against: str | None) -> tuple[Path, str | None, BuildMetadata | None]:
    if not (artifact / "config.json").is_file():
        raise QuantError(f"{artifact} is not a checkpoint dir (no config.json)")
    meta = _metadata(artifact)
    base = against or (meta.model if meta else None)
    if base is not None and Path(base).is_dir():
        base = str(Path(base).resolve())
    return artifact, base, meta


def _verdict(
    meta: BuildMetadata | None, out: dict[str, Any], *, floor: bool
) -> tuple[str | None, dict[str, Any] | None]:
    """The bound key and the verdict; (None, None) for a format without a bound or a report without a base."""
    if out.get("base_perplexity") is None or out.get("top1_agreement") is None:
        return None, None
    try:
        key = "eval_floor" if floor else bound_key(meta.plan.backend, meta.plan.method) if meta else None
    except UnknownFormatError:
        key = None
    if key is None:
        return None, None
    ppl, base_ppl = out["perplexity"], out["base_perplexity"]
    figures = Figures(delta=ppl / base_ppl - 1, kl=out["kl"], top1=out["top1_agreement"], perplexity=ppl,
                      base_perplexity=base_ppl)  # fmt: skip
    return key, judge(key, figures)


def _report(
    artifact: Path, base: str | None, meta: BuildMetadata | None, out: dict[str, Any], *, floor: bool = False
) -> QualityReport:
    key, verdict = _verdict(meta, out, floor=floor)
    interval = out.get("delta_interval")
    return QualityReport(
        artifact=str(artifact),
        base=base,
        method="eval_floor" if floor else meta.plan.method if meta else None,
        format=out["format"],
        perplexity=out["perplexity"],
        base_perplexity=out["base_perplexity"],
        top1_agreement=out["top1_agreement"],
        kl=out["kl"],
        size_bytes=checkpoint_size(artifact),
        base_size_bytes=checkpoint_size(Path(base)) if base and Path(base).is_dir() else None,
        build_seconds=meta.durations.get("total") if meta else None,
        path=out["path"],
        kernels_unavailable=list(out["kernels_unavailable"]),
        tokens=out["tokens"],
        window=out["window"],
        compute_dtype=out["dtype"],
        device=out["device"],
        seconds=out["seconds"],
        generations=list(out.get("generations", [])),
        delta_interval=tuple(interval) if interval else None,
        top1_interval=out.get("top1_interval"),
        margin_top1=out.get("margin_top1"),
        margin_tokens=out.get("margin_tokens"),
        margin=out.get("margin"),
        artifact_dtype=out.get("artifact_dtype"),
        bound_key=key,
        verdict=verdict,
    )


def record(artifact: Path, report: QualityReport) -> bool:
    """Store the report in the build's `build_metadata.json` (False when the dir has none)."""
    meta = _metadata(Path(artifact))
    if meta is None:
        return False
    meta.model_copy(update={"quality": report.model_dump(mode="json")}).write(Path(artifact))
    return True


def _metadata(artifact: Path) -> BuildMetadata | None:
    if not (artifact / METADATA_FILE).is_file():
        return None
    try:
        return BuildMetadata.read(artifact)
    except (OSError, ValueError) as exc:
        raise QuantError(f"{artifact / METADATA_FILE} is not readable: {exc}") from exc


def _keep_log(log: Path, artifact: Path) -> None:
    """Append the evaluation's tool output to the build log, when the artifact is a build dir we may write."""
    target = artifact / LOG_FILE
    if log.is_file() and target.is_file():
        with open(target, "a") as handle:
            handle.write("\n--- yap quant eval ---\n" + log.read_text())


def report_json(report: QualityReport) -> str:
    return json.dumps(report.summary())
