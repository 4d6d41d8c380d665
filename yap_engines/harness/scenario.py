"""`yap scenario run FILE`: every test of a scenario file against one target, with artifacts.

A scenario (YAML or JSON) is `{run_id?, defaults: {...}, tests: [...]}`. Each test has an `id` and
either a `prompt` or multi-turn `turns` (a list of prompts), plus optional `system`, `context`
(prepended to the first user turn), `model_kind` (`thinking` | `instruct`), `sampling` and
`timeout_s`; `defaults` gives any of these to every test (sampling is merged key by key).

Multi-turn runs use content-only continuation: each later turn's history holds the earlier user
turns and only the *content* of the replies — never reasoning, and nothing of a reply cut inside
its thinking. A turn that fails ends its test. Artifacts:
`<runs_dir>/<run_id>/inference/<test_id>/transcript.json` (raw and split text per turn, and the
messages sent) and `metrics.json` (status, usage, timings per turn and in total).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..types import Usage
from .artifacts import write_test_artifacts
from .run import (
    MODEL_KIND_SAMPLING,
    Bookmark,
    ModelKind,
    Target,
    TurnOutcome,
    build_messages,
    default_sampling,
    fit_max_tokens,
    infer_record,
    run_turn,
)

_TEST_KEYS = {"id", "system", "context", "prompt", "turns", "model_kind", "sampling", "timeout_s"}


class ScenarioError(ValueError):
    """The scenario file is malformed; the message names the test and the field."""


@dataclass(frozen=True)
class ScenarioTest:
    test_id: str
    turns: tuple[str, ...]
    system: str | None
    context: str | None
    kind: ModelKind
    sampling: Mapping[str, Any]
    timeout_s: float | None


@dataclass(frozen=True)
class Scenario:
    run_id: str | None
    tests: tuple[ScenarioTest, ...]


def load_scenario(path: Path) -> Scenario:
    """Read a scenario from YAML (`.yaml`/`.yml`) or JSON, checking every test."""
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ScenarioError(f"not valid YAML: {exc}") from exc
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"not valid JSON: {exc}") from exc
    return parse_scenario(data)


def parse_scenario(data: Any) -> Scenario:
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list) or not data["tests"]:
        raise ScenarioError("a scenario is an object with a non-empty `tests` list")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ScenarioError("`defaults` must be an object")
    tests, seen = [], set()
    for index, raw in enumerate(data["tests"]):
        if not isinstance(raw, dict):
            raise ScenarioError(f"tests[{index}] must be an object")
        test = _parse_test(index, raw, defaults)
        if test.test_id in seen:
            raise ScenarioError(f"tests[{index}]: duplicate id {test.test_id!r}")
        seen.add(test.test_id)
        tests.append(test)
    run_id = data.get("run_id")
    return Scenario(str(run_id) if run_id else None, tuple(tests))


def _parse_test(index: int, raw: dict[str, Any], defaults: dict[str, Any]) -> ScenarioTest:
    where = f"tests[{index}]"
    unknown = set(raw) - _TEST_KEYS
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}; valid: {sorted(_TEST_KEYS)}")
    merged = {**defaults, **raw, "sampling": {**(defaults.get("sampling") or {}), **(raw.get("sampling") or {})}}
    test_id = str(raw.get("id") or f"test-{index + 1}")
    if not test_id.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ScenarioError(f"{where}: id {test_id!r} must be letters, digits, '-', '_' or '.' (it names a folder)")
    if ("prompt" in raw) == ("turns" in raw):
        raise ScenarioError(f"{where} ({test_id}): give exactly one of `prompt` or `turns`")
    turns = [raw["prompt"]] if "prompt" in raw else raw["turns"]
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t for t in turns):
        raise ScenarioError(f"{where} ({test_id}): `turns` must be a non-empty list of non-empty strings")
    kind = merged.get("model_kind", "instruct")
    if kind not in MODEL_KIND_SAMPLING:
        raise ScenarioError(f"{where} ({test_id}): model_kind must be 'thinking' or 'instruct', got {kind!r}")
    timeout = merged.get("timeout_s")
    return ScenarioTest(
        test_id, tuple(turns), merged.get("system"), merged.get("context"), kind, merged["sampling"], timeout
    )


async def run_test(target: Target, test: ScenarioTest, out_dir: Path, bookmark: Bookmark) -> dict[str, Any]:
    """Run one test's turns with content-only continuation; write its artifacts; return its result line."""
    sampling = await fit_max_tokens(target, default_sampling(test.kind, test.sampling), test.sampling)
    history: list[dict[str, str]] = []
    entries: list[dict[str, Any]] = []
    outcomes: list[TurnOutcome] = []
    session_id = f"{test.test_id}-{uuid.uuid4().hex[:8]}"
    for index, prompt in enumerate(test.turns):
        context = test.context if index == 0 else None
        messages = build_messages(test.system, context, prompt, history)
        outcome = await run_turn(
            target, messages, sampling, kind=test.kind, timeout_s=test.timeout_s, session_id=session_id
        )
        entries.append(outcome.transcript_entry(index, messages))
        outcomes.append(outcome)
        if outcome.status != "ok":
            break
        # Content-only continuation: the reply's reasoning (or a reply cut in its thinking) stays out.
        history += [messages[-1], {"role": "assistant", "content": outcome.split.content}]
    last = outcomes[-1]
    summary = TurnOutcome(
        last.status,
        last.http_status,
        last.stop_reason,
        sum((o.usage for o in outcomes), Usage(0, 0)),
        outcomes[0].start_ts,
        last.end_ts,
        last.raw,
        last.split,
        last.error,
    )
    record = infer_record(
        test.test_id,
        summary,
        system=test.system,
        context=test.context,
        prompt=test.turns[len(outcomes) - 1],
        sampling=sampling,
        kind=test.kind,
        bookmark=bookmark,
    )
    write_test_artifacts(
        out_dir / test.test_id, record=record, target=target.label, turns=entries, turns_planned=len(test.turns)
    )
    return record


async def run_scenario(
    target: Target,
    scenario: Scenario,
    runs_dir: Path,
    *,
    run_id: str | None = None,
    bookmark: Bookmark | None = None,
    emit: Callable[[dict[str, Any]], None] = lambda line: None,
) -> dict[str, Any]:
    """Run every test in order, emitting one result per test, then return (and emit) the summary."""
    run_id = run_id or scenario.run_id or f"run-{uuid.uuid4().hex[:12]}"
    out_dir = runs_dir / run_id / "inference"
    by_status: dict[str, int] = {}
    for test in scenario.tests:
        record = await run_test(target, test, out_dir, bookmark or Bookmark())
        by_status[record["status"]] = by_status.get(record["status"], 0) + 1
        emit(record)
    summary = {
        "summary": True,
        "run_id": run_id,
        "target": target.label,
        "tests": len(scenario.tests),
        "by_status": by_status,
        "artifacts_dir": str(out_dir),
    }
    emit(summary)
    return summary
