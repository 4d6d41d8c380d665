"""Tool-routing clients: `vision` (the decision frame before the first chat token, and "yes"),
`screen-analysis` (toolcall yes, then a `followup` reply with no toolcall) and `tool` (the regression
cases). A missing or malformed `toolcall` frame is always a failure (non-zero exit)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from .core import TurnResult, tool_decision, turn_failure
from .options import session
from .report import ms, say
from .scripts import PERSONA


def screen_request_failures(result: TurnResult) -> tuple[str, list[str]]:
    """The decision of a screen request's turn and what is wrong with it: no toolcall, a malformed one,
    one after the first chat token, a "no", or a turn that did not end `done`."""
    failures = []
    try:
        decision = tool_decision(result.toolcall)
    except ValueError as exc:
        decision = "malformed"
        failures.append(str(exc))
    if decision == "none":
        failures.append("no toolcall frame (is the tool classifier deployed? DEPLOY_MODE=both or tool)")
    elif not result.toolcall_before_first_token:
        failures.append("the toolcall frame came after the first chat token")
    if decision == "no":
        failures.append("the tool decision was no, expected yes")
    if why := turn_failure(result, "screen request"):
        failures.append(why)
    return decision, failures


def _decision_line(result: TurnResult, decision: str) -> str:
    payload = result.toolcall or {}
    return (
        f"toolcall={decision} (label={payload.get('label')}, score={payload.get('score')}) "
        f"at {ms(result.toolcall_ms)}; "
        f"first token at {ms(result.ttfb_ms)}; {result.outcome} at {ms(result.total_ms)}"
    )


async def vision(args: argparse.Namespace) -> dict[str, Any]:
    """a screen request: the toolcall decision must come before the first chat token, and be yes"""
    async with session(args, PERSONA) as (client, _):
        result = await client.turn(args.message)
    decision, failures = screen_request_failures(result)
    say(args, _decision_line(result, decision))
    say(args, "PASS" if not failures else "FAIL: " + "; ".join(failures))
    return {
        "decision": decision,
        "toolcall": result.toolcall,
        "toolcall_ms": result.toolcall_ms,
        "ttfb_ms": result.ttfb_ms,
        "outcome": result.outcome,
        "failures": failures,
    }


async def screen_analysis(args: argparse.Namespace) -> dict[str, Any]:
    """toolcall yes on a screen request, then a `followup` with the analysis streams a reply (no toolcall)"""
    async with session(args, PERSONA) as (client, _):
        first = await client.turn(args.message)
        decision, failures = screen_request_failures(first)
        say(args, f"[screen request] {_decision_line(first, decision)}")
        say(args, f"[followup] analysis_text: {args.analysis_text}\nassistant> ", end="", flush=True)
        follow = await client.turn(args.analysis_text, kind="followup", echo=not args.json)
    if why := turn_failure(follow, "followup"):
        failures.append(why)
    if not follow.text:
        failures.append("the followup streamed no tokens")
    if follow.toolcall is not None:
        failures.append(f"the followup carried a toolcall ({follow.toolcall}); followups are chat-only")
    say(args, f"[followup] {follow.outcome}; first token {ms(follow.ttfb_ms)}, {follow.chunks} chunks")
    say(args, "PASS" if not failures else "FAIL: " + "; ".join(failures))
    return {
        "decision": decision,
        "followup": {"outcome": follow.outcome, "ttfb_ms": follow.ttfb_ms, "text": follow.text},
        "failures": failures,
    }


async def tool(args: argparse.Namespace) -> dict[str, Any]:
    """replay the tool regression cases; step/case accuracy, false positives/negatives

    Each step waits `--timeout` s for its decision. A missing or malformed decision fails the run;
    accuracy is reported and fails it only below `--min-accuracy` (default 0: off)."""
    from ..tool_cases import CASES

    gate = asyncio.Semaphore(args.concurrency)
    cases = CASES[: args.limit] if args.limit else CASES

    async def replay(name: str, steps: tuple[tuple[str, str], ...]) -> list[tuple[str, str, str]]:
        async with gate, session(args, PERSONA, session_id=f"tool-{name}") as (client, _):
            outcomes = []
            for text, expected in steps[: args.max_steps or None]:
                try:
                    result = await client.turn(text, toolcall_within=args.timeout)
                    decided = tool_decision(result.toolcall)
                except (TimeoutError, ValueError) as exc:
                    outcomes.append((text, expected, f"error: {exc}"))
                    break  # the session's turn is in an unknown state
                outcomes.append((text, expected, decided))
            return outcomes

    gathered = await asyncio.gather(*(replay(name, steps) for name, steps in cases), return_exceptions=True)
    failures: list[str] = []
    results: list[list[tuple[str, str, str]]] = []
    for (name, _), case in zip(cases, gathered, strict=True):
        if isinstance(case, BaseException):
            failures.append(f"case {name!r}: {type(case).__name__}: {case}")
            continue
        results.append(case)
        for text, _, got in case:
            if got == "none":
                failures.append(f"case {name!r}: no toolcall decision for {text!r}")
            elif got.startswith("error: "):
                failures.append(f"case {name!r}: {got[7:]} ({text!r})")
    steps = [step for case in results for step in case]
    report: dict[str, Any] = {
        "cases": len(results),
        "steps": len(steps),
        "step_accuracy": round(sum(e == g for _, e, g in steps) / max(len(steps), 1), 4),
        "case_accuracy": round(sum(all(e == g for _, e, g in c) for c in results) / max(len(results), 1), 4),
        "false_positives": [t for t, e, g in steps if e == "no" and g == "yes"],
        "false_negatives": [t for t, e, g in steps if e == "yes" and g == "no"],
    }
    if report["step_accuracy"] < args.min_accuracy:
        failures.append(f"step accuracy {report['step_accuracy']:.2%} below --min-accuracy {args.min_accuracy:.2%}")
    if not args.json:
        print(f"step accuracy {report['step_accuracy']:.2%}, case accuracy {report['case_accuracy']:.2%}")
        for text in report["false_positives"]:
            print(f"  false positive: {text}")
        for text in report["false_negatives"]:
            print(f"  false negative: {text}")
        print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    return {**report, "failures": failures}
