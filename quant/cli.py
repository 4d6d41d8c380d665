"""`yap quant plan|build|eval|push|env`: register with `add_quant_commands(subparsers)`; or `python -m quant.cli ...`.

Every flag also reads from the environment (flags win). Value flags take an optional argument, so
`make build-engine` can pass `--model $(MODEL)` with MODEL unset (then the demo model is built).
There is no flag for the Hub token: it is read from HF_TOKEN / HUGGINGFACE_HUB_TOKEN only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from yap_engines.settings import SettingsError

from .capabilities import BACKENDS, METHODS, MODES
from .errors import PlanError, QuantError
from .settings import QuantSettings


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", nargs="?", help="HF id or local dir (env MODEL); unset = the demo model")
    parser.add_argument("--backend", nargs="?", help=f"{' | '.join(BACKENDS)} (env ENGINE, default vllm)")
    parser.add_argument(
        "--mode", nargs="?", help=f"{'|'.join(MODES)} (env QUANT, default auto); build: a,b builds several"
    )
    parser.add_argument("--sm", nargs="?", help="GPU SM to plan for, e.g. 90 (env SM); unset = detect")
    parser.add_argument("--quantization", nargs="?", help="override the method, e.g. fp8, int8_sq (env QUANTIZATION)")


def add_quant_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add `quant` with its sub-commands to an `add_subparsers()` object; each sets `run(args) -> int`."""
    quant = subparsers.add_parser("quant", help="quantize models and build engines (runs in .venv-quant)")
    commands = quant.add_subparsers(dest="quant_command", required=True)

    plan = commands.add_parser("plan", help="show what would be built for a model, backend and GPU")
    _model_flags(plan)
    plan.add_argument("--role", choices=["chat", "tool"], default="chat", help="tool models are never quantized")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(run=_plan)

    build = commands.add_parser("build", help="quantize + export (+ legacy engine), cached in engines/")
    _model_flags(build)
    build.add_argument("--revision", nargs="?", help="hub revision (env MODEL_REVISION)")
    build.add_argument("--engines-dir", type=Path, help="artifact store (env YAP_ENGINES_DIR, default engines)")
    build.add_argument("--force", action="store_true", default=None, help="rebuild on a cache hit (FORCE_REBUILD=1)")
    build.add_argument("--repo-id", help="Hub repo to push to (env HF_PUSH_REPO_ID)")
    build.add_argument("--json", action="store_true", help="print the result as JSON")
    pushes = build.add_mutually_exclusive_group()
    pushes.add_argument("--push", dest="push", action="store_const", const="quant", help="push the checkpoint")
    pushes.add_argument("--push-quant", dest="push", action="store_const", const="quant", help="= --push")
    pushes.add_argument("--push-engine", dest="push", action="store_const", const="engine", help="push the engine")
    build.set_defaults(run=_build)

    push = commands.add_parser("push", help="push a build dir to the Hugging Face Hub (token from HF_TOKEN)")
    push.add_argument("artifact", type=Path, help="a build dir under engines/")
    what = push.add_mutually_exclusive_group(required=True)
    what.add_argument("--push-quant", dest="what", action="store_const", const="quant", help="the checkpoint")
    what.add_argument("--push-engine", dest="what", action="store_const", const="engine", help="this GPU's engine")
    push.add_argument("--repo-id", help="owner/name (env HF_PUSH_REPO_ID)")
    visibility = push.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=None, help="(default)")
    visibility.add_argument("--public", dest="private", action="store_false", help="create the repo public")
    push.set_defaults(run=_push)

    evaluate = commands.add_parser(
        "eval", help="quality report: perplexity, top-1 agreement and KL against the base, size, build time"
    )
    evaluate.add_argument("artifact", type=Path, help="a build dir under engines/ (or any local checkpoint)")
    evaluate.add_argument("--against", help="the base model (default: the one the build was made from)")
    evaluate.add_argument("--tokens", type=int, help="held-out tokens to score (env QUANT_EVAL_TOKENS, default all)")
    evaluate.add_argument("--json", action="store_true", help="print the report as one JSON object")
    evaluate.set_defaults(run=_eval)

    env = commands.add_parser("env", help="create or update .venv-quant (instant when up to date)")
    env.add_argument("--path", type=Path, help="where (env YAP_QUANT_VENV, default .venv-quant)")
    env.add_argument("--force", action="store_true", help="reinstall")
    env.set_defaults(run=_env)
    return quant


def _settings(args: argparse.Namespace, **extra: Any) -> QuantSettings:
    return QuantSettings.from_env(
        model=args.model or None,
        backend=args.backend or None,
        mode=args.mode or None,
        quantization=args.quantization or None,
        **extra,
    )


def _guarded(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except PlanError as exc:
            print(f"yap quant: refused: {exc}", file=sys.stderr)
            return 2
        except (QuantError, SettingsError) as exc:
            print(f"yap quant: {exc}", file=sys.stderr)
            return 1

    return run


@_guarded
def _plan(args: argparse.Namespace) -> int:
    from .build import make_plan
    from .gpu import resolve_sm

    settings = _settings(args)
    p = make_plan(settings, resolve_sm(args.sm or None, settings.sm), role=args.role)
    if args.json:
        print(p.to_json())
    else:
        what = f"{p.method} ({METHODS[(p.backend, p.method)].summary})" if p.method else "-"
        print(f"{p.action}: {what} for {p.backend} on {p.gpu or 'no GPU given'} — {p.reason}")
        for note in p.notes:
            print(f"  note: {note}")
    return 0


@_guarded
def _build(args: argparse.Namespace) -> int:
    from .build import build_many
    from .gpu import resolve_sm
    from .push import push_artifact

    settings = _settings(args, revision=args.revision or None, engines_dir=args.engines_dir, force_rebuild=args.force)
    modes = [m.strip() for m in settings.mode.split(",") if m.strip()] or ["auto"]
    if args.push and len(modes) > 1:
        raise QuantError(f"--push publishes one build: pass a single --mode (got {','.join(modes)})")
    gpu = resolve_sm(args.sm or None, settings.sm)
    results = build_many([(settings.model_copy(update={"mode": mode}), gpu) for mode in modes])
    say = sys.stderr if args.json else sys.stdout  # with --json, stdout carries only the JSON
    report = []
    for result in results:
        pushed = None
        if result.path is None:
            target = settings.model or "the demo model"
            print(f"nothing to build ({result.plan.reason}): serve it with "
                  f"`yap serve --engine {result.plan.backend} --model {target}`", file=say)  # fmt: skip
        else:
            print(f"{'cache hit' if result.cached else 'built'}: {result.path}", file=say)
            print(f"serve it: yap serve --engine {result.plan.backend} --model {result.path}", file=say)
            if args.push:
                pushed = push_artifact(result.path, what=args.push, settings=settings, repo_id=args.repo_id)
                print(f"pushed {len(pushed.files)} files to {pushed.repo_id}: {pushed.commit_url}", file=say)
        report.append({
            "path": str(result.path) if result.path else None,
            "cached": result.cached,
            "plan": result.plan.model_dump(mode="json"),
            "pushed": pushed.repo_id if pushed else None,
        })  # fmt: skip
    if args.json:
        print(json.dumps(report[0] if len(report) == 1 else report))
    return 0


@_guarded
def _push(args: argparse.Namespace) -> int:
    from .push import push_artifact

    settings = QuantSettings.from_env(hf_push_private=args.private)
    pushed = push_artifact(args.artifact, what=args.what, settings=settings, repo_id=args.repo_id)
    print(f"pushed {len(pushed.files)} files to {pushed.repo_id} ({'private' if pushed.private else 'public'}): "
          f"{pushed.commit_url}")  # fmt: skip
    return 0


@_guarded
def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, record, report_json

    settings = QuantSettings.from_env(eval_tokens=args.tokens)
    report = evaluate(args.artifact, args.against, settings=settings)
    stored = record(args.artifact, report)
    if args.json:
        print(report_json(report))
    else:
        print(report.row())
        for kernel in report.kernels_unavailable:
            print(f"  not used: {kernel}")
        if stored:
            print(f"  stored in {args.artifact / 'build_metadata.json'}")
    return 0


@_guarded
def _env(args: argparse.Namespace) -> int:
    from .env import ensure_env

    settings = QuantSettings.from_env(quant_venv=args.path)
    env = ensure_env(settings.quant_venv, force=args.force, log=lambda line: print(line, file=sys.stderr))
    print(f"{env.root}: " + ", ".join(f"{k} {v}" for k, v in env.versions.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m quant.cli [quant] plan|build|push|env ...` (the same commands as `yap quant ...`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["quant"]:
        argv = ["quant", *argv]
    parser = argparse.ArgumentParser(prog="yap", description="Yap quantization and builds")
    add_quant_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
