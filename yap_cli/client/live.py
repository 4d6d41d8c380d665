"""`yap client live`: an interactive conversation from the terminal (or a pipe), with barge-in.

`--persona/-p` is the system prompt (chat_prompt), `--warm` starts from the pre-built history (recall),
`--recv-timeout`/`--timeout` bounds the wait for the end of a reply, `--max-tokens` caps each reply,
and an optional positional opener is sent first.

Interim transcripts: a line ending in `...` is what a speech-to-text service streams while the user is
still speaking. It is sent as a `prefill` (the server warms the prompt the next message will send) and
is no turn; the next plain line is the final message. Each reply shows the share of its prompt the
prefix cache served.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from .core import TERMINAL, TurnResult
from .options import session
from .report import ms as _ms
from .scripts import WARM_HISTORY

INTERIM_SUFFIX = "..."  # a line ending so is an interim transcript: sent as `prefill`, not as a turn
PING_EVERY_S = 20.0  # `yap client live` pings a quiet session well inside the server's idle timeout


def _row(turn: TurnResult) -> dict[str, Any]:
    """A turn as `yap client live` reports it."""
    row: dict[str, Any] = {
        "utterance": turn.utterance,
        "outcome": turn.outcome,
        "ttfb_ms": None if turn.ttfb_ms is None else round(turn.ttfb_ms, 1),
        "text": turn.text,
        "completion_tokens": turn.completion_tokens,
        "prompt_tokens": turn.prompt_tokens,
        "cached_tokens": turn.cached_tokens,
    }
    if turn.spoken_text is not None:
        row["spoken_text"] = turn.spoken_text
    return row


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Feed stdin lines into `queue` (None at end of input) from a daemon thread, so exit never waits on it."""
    import sys
    import threading

    def pump() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except RuntimeError:  # the client finished (its event loop closed) while input was still open
            return

    threading.Thread(target=pump, name="yap-live-stdin", daemon=True).start()


async def live(args: argparse.Namespace) -> dict[str, Any]:
    """interactive: type a line, watch the reply stream; typing during a reply barges in

    Each line is a user turn. A line typed while a reply streams is a barge-in: the client cancels the
    reply with `spoken_text` set to what was shown so far (what the user "heard"), then sends the line.
    Every turn prints its first-token latency. From a pipe or file (not a terminal) each line waits for
    the previous reply unless `--interrupt` is given; input ends the session at end of file.
    """
    import sys

    import websockets

    interrupt = args.interrupt or sys.stdin.isatty()

    def say(*parts: Any, **options: Any) -> None:  # the conversation as it streams; --json prints only the report
        if not args.json:
            print(*parts, **options)

    queue: asyncio.Queue[str | None] = asyncio.Queue()
    _stdin_lines(asyncio.get_running_loop(), queue)
    # --max-tokens goes with each turn; the rest of the sampling went with start
    extra = {"sampling": {"max_tokens": args.max_tokens}} if args.max_tokens is not None else {}
    turns: list[TurnResult] = []
    warm: dict[str, Any] = {"history": list(WARM_HISTORY)} if args.warm else {}
    async with session(args, args.persona, **warm) as (client, ack):
        client.recv_timeout = None  # a quiet user is no error: the reply timeout below bounds only replies
        model = ack["payload"].get("model")
        say(f"[connected to {model}; type a line and press enter, end of input quits]", file=sys.stderr, flush=True)
        running: TurnResult | None = None
        by_id: dict[str, TurnResult] = {}

        async def begin(utterance: str) -> TurnResult:
            turn = TurnResult(f"live-{uuid.uuid4().hex[:8]}", utterance)
            turns.append(turn)
            by_id[turn.request_id] = turn
            await client.send("message", turn.request_id, user_utterance=utterance, **extra)
            say("assistant> ", end="", flush=True)
            return turn

        def finish(turn: TurnResult, frame: dict[str, Any]) -> None:
            turn.record(frame)
            payload = frame["payload"]
            if turn is running:
                detail = payload.get("message") or payload.get("finish_reason") or payload.get("reason")
                cache = ""
                if turn.prompt_tokens:
                    share = (turn.cached_tokens or 0) / turn.prompt_tokens
                    cache = f"; cached {share:.0%} of {turn.prompt_tokens} prompt tokens"
                say(f"\n  [{turn.outcome}: {detail}; first token {_ms(turn.ttfb_ms)}{cache}]", flush=True)

        line_task: asyncio.Task[str | None] | None = None
        frame_task = asyncio.create_task(client.recv())
        ended = False
        try:
            if args.opener:
                running = await begin(args.opener)
            while not (ended and running is None):
                if line_task is None and not ended and (running is None or interrupt):
                    line_task = asyncio.create_task(queue.get())
                waiting: set[asyncio.Task[Any]] = {frame_task} | ({line_task} if line_task else set())
                done, _ = await asyncio.wait(waiting, timeout=PING_EVERY_S, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    if running is not None and time.perf_counter() - running.sent > args.recv_timeout:
                        raise TimeoutError(f"no end to the reply after {args.recv_timeout:g} s")
                    await client.send("ping", "ping")  # keeps a quiet session open past the idle timeout
                    continue
                if line_task in done:
                    line, line_task = line_task.result(), None
                    if line is None:
                        ended = True
                    elif line.rstrip().endswith(INTERIM_SUFFIX):  # still speaking: warm, no turn
                        interim = line.rstrip().removesuffix(INTERIM_SUFFIX).strip()
                        await client.send("prefill", f"prefill-{uuid.uuid4().hex[:8]}", user_utterance=interim)
                    elif line.strip():
                        if running is not None:
                            running.spoken_text = running.text  # the user heard what was shown
                            await client.send("cancel", running.request_id, spoken_text=running.text)
                            say(f" —\n  [barge-in; first token {_ms(running.ttfb_ms)}]", flush=True)
                        running = await begin(line.strip())
                if frame_task in done:
                    try:
                        frame = frame_task.result()
                    except websockets.ConnectionClosed as closed:
                        say(f"\n[the server closed the connection: {closed}]", file=sys.stderr, flush=True)
                        return {
                            "model": model,
                            "turns": [_row(t) for t in turns],
                            "closed": str(closed),
                            "failures": [f"the server closed the connection: {closed}", *_failures(turns)],
                        }
                    frame_task = asyncio.create_task(client.recv())
                    turn = by_id.get(str(frame.get("request_id")))
                    kind = frame["type"]
                    if turn is None:
                        if kind == "ack" and frame["payload"].get("for") == "prefill":
                            warmed = frame["payload"]
                            say(f"  [warmed: {warmed['cached_tokens']} of {warmed['prompt_tokens']} tokens cached]")
                        elif kind == "error":
                            say(f"\n  [error: {frame['payload'].get('message')}]", flush=True)
                        continue
                    if kind == "token" and turn is running:
                        turn.record(frame)
                        say(frame["payload"]["text"], end="", flush=True)
                    elif kind in TERMINAL:
                        finish(turn, frame)
                        if turn is running:
                            running = None
        finally:
            for task in (frame_task, line_task):
                if task is not None:
                    task.cancel()
    return {"model": model, "turns": [_row(t) for t in turns], "failures": _failures(turns)}


def _failures(turns: list[TurnResult]) -> list[str]:
    """Turns that ended in an `error` (a barge-in's `cancelled` is how live works, not a failure)."""
    return [f"turn {t.utterance!r} ended error" for t in turns if t.outcome == "error"]
