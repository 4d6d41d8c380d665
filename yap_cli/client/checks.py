"""Session-lifecycle regression clients: `cancel`, `idle`, `personality`. Each checks what the protocol
promises and lists every violation in the report's `failures` (the command then exits non-zero)."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from .core import STREAM, ServerError, TurnResult, YapClient, turn_failure
from .options import connect, session, start_payload
from .report import ms, say
from .scripts import CANCEL_MESSAGE, PERSONA, PERSONA_VARIANTS, RECOVERY_MESSAGE, SWITCH_MESSAGES, persona_for

IDLE_CLOSE = (4000, "idle_timeout")
"""The server's idle close: code and reason (protocol.md, as the seed's idle test expects them)."""


CANCEL_ATTEMPTS = 3
"""Replies `cancel` asks for until one is still streaming when its cancel lands (a reply that outruns the
cancel is a race, not a server fault); after that many, the run fails."""


async def cancel(args: argparse.Namespace) -> dict[str, Any]:
    """cancel replies after their first tokens; no stream frames after `cancelled`; the session recovers"""

    async def cancelled_turn(client: YapClient) -> tuple[TurnResult, list[dict[str, Any]], int]:
        """A turn cancelled `--cancel-delay` s after its first token, the frames of it that came in the
        `--drain-timeout` s after its end, and the attempts it took."""
        attempts = 0
        while True:
            attempts += 1
            cut = await client.turn(CANCEL_MESSAGE, cancel_after=args.cancel_delay)
            late = await client.drain(cut.request_id, args.drain_timeout)
            if cut.outcome != "done" or attempts == CANCEL_ATTEMPTS:
                break
        # a cancel that came after the end is answered `cancelled` with nothing_running: not a stray frame
        return cut, [f for f in late if f["type"] in STREAM and not f["payload"].get("nothing_running")], attempts

    async def one_client(index: int) -> dict[str, Any]:
        failures: list[str] = []
        async with session(args, PERSONA, session_id=f"cancel-{index}") as (client, _):
            cut, stray, attempts = await cancelled_turn(client)
            if cut.outcome == "done":
                when = "before the cancel was sent" if cut.cancel_sent_ms is None else "before the cancel landed"
                failures.append(
                    f"{attempts} replies all ended done {when} (nothing was cancelled): lower --cancel-delay "
                    f"({args.cancel_delay:g} s) or serve longer replies"
                )
            elif cut.outcome != "cancelled":
                failures.append(turn_failure(cut, "cancelled turn") or f"the cancelled turn ended {cut.outcome}")
            elif cut.terminal.get("reason") != "client_request":
                failures.append(f"cancelled with reason {cut.terminal.get('reason')!r}, not 'client_request'")
            if stray:
                kinds = ", ".join(f["type"] for f in stray)
                failures.append(f"{len(stray)} frame(s) of the cancelled turn after its end: {kinds}")
            recovery = await client.turn(RECOVERY_MESSAGE)
            if why := turn_failure(recovery, "recovery request"):
                failures.append(why)
        say(
            args,
            f"[client {index}] {cut.outcome} after first token {ms(cut.ttfb_ms)}, cancel→{cut.outcome} "
            f"{ms(cut.cancel_to_terminal_ms)} (attempt {attempts}); {len(stray)} stray frame(s) in "
            f"{args.drain_timeout:g} s; recovery {recovery.outcome} (first token {ms(recovery.ttfb_ms)}) "
            + ("PASS" if not failures else "FAIL: " + "; ".join(failures)),
            flush=True,
        )
        return {
            "outcome": cut.outcome,
            "attempts": attempts,
            "ttfb_ms": cut.ttfb_ms,
            "cancel_to_cancelled_ms": cut.cancel_to_terminal_ms,
            "stray_frames": len(stray),
            "recovery": recovery.outcome,
            "failures": [f"client {index}: {why}" for why in failures],
        }

    clients = await asyncio.gather(*(one_client(i) for i in range(args.clients)), return_exceptions=True)
    rows = [
        c if isinstance(c, dict) else {"failures": [f"client {i}: {type(c).__name__}: {c}"]}
        for i, c in enumerate(clients)
    ]
    failures = [why for row in rows for why in row["failures"]]
    first = rows[0]
    return {
        "outcome": first.get("outcome"),
        "cancel_to_cancelled_ms": first.get("cancel_to_cancelled_ms"),
        "clients": rows,
        "failures": failures,
    }


async def _closed(client: YapClient, within: float) -> tuple[int | None, str | None, float | None, list[str]]:
    """Read until the server closes (close code, reason, seconds taken, frame types seen), or `within` s pass
    (code None)."""
    import websockets

    kinds: list[str] = []
    started = time.perf_counter()
    try:
        while (left := started + within - time.perf_counter()) > 0:
            kinds.append((await client.recv(within=left))["type"])
    except TimeoutError:
        pass
    except websockets.ConnectionClosed as closed:
        after = round(time.perf_counter() - started, 2)
        return (closed.rcvd.code, closed.rcvd.reason, after, kinds) if closed.rcvd else (None, None, after, kinds)
    return None, None, None, kinds


async def idle(args: argparse.Namespace) -> dict[str, Any]:
    """normal close (end → session_end, 1000), then silence until the server's idle close (4000 idle_timeout)"""
    failures: list[str] = []
    async with await connect(args) as connection:  # normal close
        client = YapClient(connection, recv_timeout=args.recv_timeout)
        await client.start(PERSONA, **start_payload(args))
        await asyncio.sleep(args.normal_wait)
        await client.end()
        code, reason, _, kinds = await _closed(client, args.recv_timeout)
    normal = {"frames": kinds, "close_code": code, "close_reason": reason}
    if "session_end" not in kinds:
        failures.append(f"normal close: no session_end frame after end (got {kinds})")
    if code != 1000:
        failures.append(f"normal close: close code {code}, expected 1000")
    say(
        args,
        f"[normal] end after {args.normal_wait:g} s → {kinds}, close {code} " + ("PASS" if not failures else "FAIL"),
    )

    expect, grace = args.idle_expect_seconds, args.idle_grace_seconds
    async with await connect(args) as connection:  # idle close
        client = YapClient(connection, recv_timeout=args.recv_timeout)
        await client.start(PERSONA, **start_payload(args))
        code, reason, after, kinds = await _closed(client, expect + grace)
    idle_failures = []
    if code is None:
        idle_failures.append(f"idle: still open after {expect + grace:g} s (expected a close after ~{expect:g} s)")
    else:
        if (code, reason) != IDLE_CLOSE:
            idle_failures.append(f"idle: closed {code} {reason!r}, expected {IDLE_CLOSE[0]} {IDLE_CLOSE[1]!r}")
        if after is not None and after < expect - grace:
            idle_failures.append(
                f"idle: closed after {after:g} s, before the expected {expect:g} s (grace {grace:g} s)"
            )
    say(
        args,
        f"[idle] closed {code} {reason!r} after {after} s (expected {IDLE_CLOSE[0]} {IDLE_CLOSE[1]!r} "
        f"after {expect:g} ± {grace:g} s) " + ("PASS" if not idle_failures else "FAIL"),
    )
    return {
        "normal": normal,
        "closed_after_s": after,
        "close_code": code,
        "close_reason": reason,
        "failures": failures + idle_failures,
    }


def personalities(first: str, switches: int) -> list[str]:
    """`first`, then `switches` more from PERSONA_VARIANTS (cycling), each different from the one before."""
    names, pool, i = [first], list(PERSONA_VARIANTS), 0
    while len(names) <= switches:
        if (candidate := pool[i % len(pool)]) != names[-1]:
            names.append(candidate)
        i += 1
    return names


async def personality(args: argparse.Namespace) -> dict[str, Any]:
    """switch personality (a new `start`: chat_prompt, personality, the history so far) --switches times"""
    failures: list[str] = []
    rows: list[dict[str, Any]] = []
    history: list[dict[str, str]] = []
    async with await connect(args) as connection:
        client = YapClient(connection, recv_timeout=args.recv_timeout)
        for step, name in enumerate(personalities(args.personality, args.switches)):
            if step:
                await asyncio.sleep(args.delay)
            what = "start" if not step else f"switch {step}"
            try:
                ack = await client.start(
                    persona_for(name), **start_payload(args, personality=name, history=list(history))
                )
            except ServerError as exc:
                hint = (
                    " — the server limits chat_prompt changes (CHAT_PROMPT_UPDATE_MAX_PER_WINDOW per "
                    "CHAT_PROMPT_UPDATE_WINDOW_SECONDS); use fewer --switches or a longer --delay"
                    if exc.code == "rate_limited"
                    else ""
                )
                failures.append(f"{what} to {name!r} refused: {exc}{hint}")
                say(args, f"[{what}] {name}: REFUSED {exc}{hint}")
                break
            if ack["payload"].get("personality") != name:
                failures.append(f"{what}: ack says personality {ack['payload'].get('personality')!r}, not {name!r}")
            message = SWITCH_MESSAGES[step % len(SWITCH_MESSAGES)]
            say(
                args,
                f"[{what}] personality={name} (history {len(history)} messages)\nyou> {message}\nassistant> ",
                end="",
            )
            result = await client.turn(message, echo=not args.json)
            if why := turn_failure(result, f"{what} turn"):
                failures.append(why)
            history += [{"role": "user", "content": message}, {"role": "assistant", "content": result.text}]
            rows.append(
                {"personality": name, "outcome": result.outcome, "ttfb_ms": result.ttfb_ms, "usage": result.usage}
            )
        if connection.close_code is None:
            await client.end()
    say(args, "PASS" if not failures else "FAIL: " + "; ".join(failures))
    return {"switches": rows, "failures": failures}
