"""Latency clients: `warmup`, `conversation`, `history` (recall over a warm history, `--bench` under
load) and `bench` (sessions at once). Each returns its JSON report; `failures` lists every turn that
did not end `done` (or session that broke), and makes the command exit non-zero."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from .core import TurnResult, YapClient, turn_failure
from .options import session
from .report import bench_summary, latency_summary, ms, print_bench_summary, print_latency_summary, say
from .scripts import CONVERSATION, PERSONA, RECALL, WARM_HISTORY


def ack_line(ack: dict[str, Any]) -> str:
    """The seed warmup's ACK line: session time and the effective gender/personality."""
    payload = ack["payload"]
    stamp = payload.get("server_time")
    when = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds") if stamp else "?"
    return (
        f"ACK session={payload.get('session_id')} session_time={when} gender={payload.get('gender')} "
        f"personality={payload.get('personality')} deploy_mode={payload.get('deploy_mode')} "
        f"model={payload.get('model')}"
    )


def metrics_line(result: TurnResult, run: str | None = None) -> dict[str, Any]:
    """The seed warmup's metrics JSON line."""
    stream = None if result.ttfb_ms is None else round(result.total_ms - result.ttfb_ms, 2)
    line: dict[str, Any] = {
        "type": "metrics",
        "ttfb_ms": result.ttfb_ms,
        "total_ms": result.total_ms,
        "stream_ms": stream,
        "chunks": result.chunks,
        "chars": len(result.text),
    }
    return {**line, "run": run} if run else line


async def warmup(args: argparse.Namespace) -> dict[str, Any]:
    """one reply: an ACK line, then metrics and final_text JSON lines (`--double-ttfb`: cold, then warm)"""
    runs = ("cold", "warm") if args.double_ttfb else ("cold",)
    results: list[TurnResult] = []
    async with session(args, PERSONA) as (client, ack):
        say(args, ack_line(ack), flush=True)
        for run in runs:
            result = await client.turn(args.message)
            results.append(result)
            say(args, json.dumps(metrics_line(result, run if args.double_ttfb else None)))
            say(args, json.dumps({"type": "final_text", "text": result.text}, ensure_ascii=False), flush=True)
    failures = [why for run, r in zip(runs, results, strict=True) if (why := turn_failure(r, f"{run} request"))]
    report: dict[str, Any] = {
        "outcome": results[0].outcome,
        "ttfb_ms": results[0].ttfb_ms,
        "total_ms": results[0].total_ms,
        "gender": ack["payload"].get("gender"),
        "personality": ack["payload"].get("personality"),
    }
    if args.double_ttfb:
        report["second_ttfb_ms"] = results[1].ttfb_ms
    return {**report, "failures": failures}


async def _scripted(
    args: argparse.Namespace, lines: tuple[str, ...], **start: Any
) -> tuple[list[TurnResult], dict[str, Any]]:
    """One session saying `lines` in turn (echoing the exchange), then its LATENCY SUMMARY."""
    turns = []
    async with session(args, PERSONA, **start) as (client, _):
        for line in lines:
            say(args, f"you> {line}\nassistant> ", end="", flush=True)
            result = await client.turn(line, echo=not args.json)
            say(args, f"  [{result.outcome}; ttfb {ms(result.ttfb_ms)}]")
            turns.append(result)
    report = latency_summary(turns)
    if not args.json:
        print_latency_summary(report)
    failures = [why for i, t in enumerate(turns, 1) if (why := turn_failure(t, f"turn {i}"))]
    return turns, {**report, "outcomes": [t.outcome for t in turns], "failures": failures}


async def conversation(args: argparse.Namespace) -> dict[str, Any]:
    """a scripted 10-turn conversation; LATENCY SUMMARY (FIRST apart, avg/p50/p90/p95 over turns 2+)"""
    _, report = await _scripted(args, CONVERSATION[: args.turns])
    return report


async def history(args: argparse.Namespace) -> dict[str, Any]:
    """recall questions over a pre-built warm history (TTFB p50/p90/p95); `--bench`: many sessions at once"""
    if args.bench:
        return await run_load(args, recall_all, history=list(WARM_HISTORY))
    _, report = await _scripted(args, RECALL, history=list(WARM_HISTORY))
    return report


async def recall_all(client: YapClient, index: int, args: argparse.Namespace) -> list[TurnResult]:
    """`history --bench`: one session asks every recall question."""
    return [await client.turn(line) for line in RECALL]


async def bench_turns(client: YapClient, index: int, args: argparse.Namespace) -> list[TurnResult]:
    """`bench`: one turn per session (two with `--double-ttfb`: the same message, cold then warm)."""
    message = args.message or CONVERSATION[index % len(CONVERSATION)]
    return [await client.turn(message) for _ in range(2 if args.double_ttfb else 1)]


Script = Callable[[YapClient, int, argparse.Namespace], Awaitable[list[TurnResult]]]


async def run_load(args: argparse.Namespace, script: Script, **start: Any) -> dict[str, Any]:
    """`args.sessions` sessions, `args.concurrency` at once, each running `script` within `args.timeout` s;
    the bench table over every turn (and per position, cold/warm, with `--double-ttfb`)."""
    gate = asyncio.Semaphore(args.concurrency)

    async def one_session(index: int) -> list[TurnResult]:
        async with gate, session(args, PERSONA, session_id=f"bench-{index}", **start) as (client, _):
            return await asyncio.wait_for(script(client, index, args), args.timeout)

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one_session(i) for i in range(args.sessions)), return_exceptions=True)
    wall = time.perf_counter() - started
    failures: list[str] = []
    results: list[list[TurnResult]] = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, BaseException):
            failures.append(f"session {index}: {type(outcome).__name__}: {outcome}")
            continue
        results.append(outcome)
        failures += [
            f"session {index}: {why}" for n, r in enumerate(outcome, 1) if (why := turn_failure(r, f"turn {n}"))
        ]
    turns = [r for rs in results for r in rs]
    report: dict[str, Any] = {
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "completed": sum(all(r.outcome == "done" for r in rs) for rs in results),
        "failed": args.sessions - sum(all(r.outcome == "done" for r in rs) for rs in results),
        "turns": len(turns),
        "wall_s": round(wall, 2),
        **bench_summary(turns),
    }
    if getattr(args, "double_ttfb", False):
        report["cold"] = bench_summary([rs[0] for rs in results])
        report["warm"] = bench_summary([rs[1] for rs in results if len(rs) > 1])
    if not args.json:
        print(
            f"sessions {args.sessions}  concurrency {args.concurrency}  completed {report['completed']}  "
            f"failed {report['failed']}  turns {len(turns)}  wall {report['wall_s']} s"
        )
        if "cold" in report:
            print_bench_summary(report["cold"], "cold (1st transaction)")
            print_bench_summary(report["warm"], "warm (2nd transaction)")
        else:
            print_bench_summary(report)
    return {**report, "failures": failures}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """many sessions at once; p50/p95 of toolcall, first token, first 3 words, first sentence"""
    return await run_load(args, bench_turns)
