"""`yap client live`: an interactive conversation from the terminal (or a pipe), with barge-in.

`--persona/-p` is the system prompt (chat_prompt), `--warm` starts from the pre-built history (recall),
`--recv-timeout`/`--timeout` bounds the wait for the end of a reply, `--max-tokens` caps each reply,
and an optional positional opener is sent first.

Interim transcripts, as a speech-to-text service streams them while the user is still speaking, go out
as `prefill` frames (the server warms the prompt the next message will send; no turn), paced by
`interim.Interim`:

- on a terminal, as the user types: the terminal is in cbreak mode (`terminal.py`) and the client keeps
  the line, sending it as a `prefill` when a word ends or typing pauses; Enter sends the `message`;
- from a pipe, line by line: a line ending in `...` is an interim transcript, the next plain line the
  final message (a line so typed on a terminal works the same).

Each reply shows the share of its prompt the prefix cache served and the prefills sent before it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
import uuid
from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

from .core import TERMINAL, TurnResult
from .interim import Interim, Prefill
from .options import session
from .report import ms as _ms
from .scripts import WARM_HISTORY
from .terminal import Input, LineEditor, keystrokes

INTERIM_SUFFIX = "..."  # a line ending so is an interim transcript: sent as `prefill`, not as a turn
PING_EVERY_S = 20.0  # `yap client live` pings a quiet session well inside the server's idle timeout
PROMPT = "you> "
_AFTER_ENTER = re.compile(r"(?<=[\r\n])")  # splits keystrokes after each Enter


def _row(turn: TurnResult, prefills: Iterable[Prefill] = ()) -> dict[str, Any]:
    """A turn as `yap client live` reports it (`prefills`: those sent before its message)."""
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
    if sent := [p.row() for p in prefills]:
        row["prefills"] = sent
    return row


def _cache_note(turn: TurnResult, prefills: list[Prefill]) -> str:
    """The end of a turn's summary line: its cached share and the prefills sent before it."""
    note = ""
    if turn.prompt_tokens:
        share = (turn.cached_tokens or 0) / turn.prompt_tokens
        note = f"; cached {share:.0%} of {turn.prompt_tokens} prompt tokens"
    if prefills:
        note += f"; {len(prefills)} prefill{'s' * (len(prefills) > 1)} before it"
        acked = [p for p in prefills if p.prompt_tokens is not None]
        if acked:
            note += f", the last acknowledged warmed {acked[-1].prompt_tokens} tokens"
    return note


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Input]) -> None:
    """Feed stdin lines into `queue` as ("line", text), then ("eof", ""), from a daemon thread, so exit
    never waits on it."""
    import sys
    import threading

    def pump() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, ("line", line.rstrip("\n")))
            loop.call_soon_threadsafe(queue.put_nowait, ("eof", ""))
        except RuntimeError:  # the client finished (its event loop closed) while input was still open
            return

    threading.Thread(target=pump, name="yap-live-stdin", daemon=True).start()


async def live(args: argparse.Namespace) -> dict[str, Any]:
    """interactive: type and watch the reply stream; typing warms the prompt, a line during a reply barges in

    Each line is a user turn. A line entered while a reply streams is a barge-in: the client cancels the
    reply with `spoken_text` set to what was shown so far (what the user "heard"), then sends the line.
    On a terminal the line goes out as `prefill` frames while it is typed (module docstring); what is
    typed during a reply shows when the reply ends or Enter barges in. Ctrl-D ends the session after the
    running reply, Ctrl-C at once (cancelling the reply). Every turn prints its first-token latency and
    cached share. From a pipe or file (not a terminal) each line waits for the previous reply unless
    `--interrupt` is given; input ends the session at end of file.
    """
    import sys

    import websockets

    terminal = sys.stdin.isatty() and os.name == "posix"  # keystrokes need termios
    interrupt = args.interrupt or terminal

    def say(*parts: Any, **options: Any) -> None:  # the conversation as it streams; --json prints only the report
        if not args.json:
            print(*parts, **options)

    queue: asyncio.Queue[Input] = asyncio.Queue()
    # --max-tokens goes with each turn; the rest of the sampling went with start
    extra = {"sampling": {"max_tokens": args.max_tokens}} if args.max_tokens is not None else {}
    turns: list[TurnResult] = []
    prefills_of: dict[str, list[Prefill]] = {}
    warm: dict[str, Any] = {"history": list(WARM_HISTORY)} if args.warm else {}

    def rows() -> list[dict[str, Any]]:
        return [_row(t, prefills_of.get(t.request_id, ())) for t in turns]

    async with session(args, args.persona, **warm) as (client, ack):
        client.recv_timeout = None  # a quiet user is no error: the reply timeout below bounds only replies
        model = ack["payload"].get("model")
        how = (
            "type, enter sends; ctrl-d or ctrl-c quits"
            if terminal
            else "type a line and press enter, end of input quits"
        )
        say(f"[connected to {model}; {how}]", file=sys.stderr, flush=True)
        running: TurnResult | None = None
        ended = False  # end of input, ctrl-d or ctrl-c: the session ends once no reply runs
        by_id: dict[str, TurnResult] = {}
        editor = LineEditor()
        interim = Interim(lambda request_id, text: client.send("prefill", request_id, user_utterance=text))

        def prompt() -> None:  # a terminal's input line, shown again after anything printed over it
            if terminal and running is None and not ended:
                say(PROMPT + editor.line, end="", flush=True)

        def notice(text: str) -> None:
            say(f"\n  [{text}]", flush=True)
            prompt()

        async def begin(utterance: str) -> TurnResult:
            turn = TurnResult(f"live-{uuid.uuid4().hex[:8]}", utterance)
            turns.append(turn)
            by_id[turn.request_id] = turn
            prefills_of[turn.request_id] = interim.take()  # the message aborts a running warm
            await client.send("message", turn.request_id, user_utterance=utterance, **extra)
            say("assistant> ", end="", flush=True)
            return turn

        async def entered(line: str, shown: bool) -> None:
            """A line is complete (`shown`: its text is on the screen already)."""
            nonlocal running
            text = line.strip()
            if text.endswith(INTERIM_SUFFIX):  # still speaking: warm, no turn
                interim.typed(text.removesuffix(INTERIM_SUFFIX).strip(), word_ended=True)
                prompt()
            elif text:
                if running is not None:
                    running.spoken_text = running.text  # the user heard what was shown
                    await client.send("cancel", running.request_id, spoken_text=running.text)
                    say(f" —\n  [barge-in; first token {_ms(running.ttfb_ms)}]", flush=True)
                    if terminal and not shown:
                        say(PROMPT + text)
                running = await begin(text)
            else:
                prompt()

        async def keys(text: str) -> bool:
            """Keystrokes from the terminal; False when they end the session."""
            for part in _AFTER_ENTER.split(text):
                shown = running is None
                typed = editor.feed(part)
                if shown:
                    say(typed.echo, end="", flush=True)
                if typed.quit:  # ctrl-c: cancel the reply and go
                    say("^C", flush=True)
                    if running is not None:
                        running.spoken_text = running.text
                        await client.send("cancel", running.request_id, spoken_text=running.text)
                    return False
                if typed.eof:  # ctrl-d: end after the reply
                    say(flush=True)
                    return False
                for line in typed.entered:
                    await entered(line, shown)
                if typed.changed:
                    interim.typed(typed.line, word_ended=typed.word_ended)
            return True

        def finish(turn: TurnResult, frame: dict[str, Any]) -> None:
            turn.record(frame)
            payload = frame["payload"]
            if turn is running:
                detail = payload.get("message") or payload.get("finish_reason") or payload.get("reason")
                note = _cache_note(turn, prefills_of.get(turn.request_id, []))
                say(f"\n  [{turn.outcome}: {detail}; first token {_ms(turn.ttfb_ms)}{note}]", flush=True)

        def answered(prefill: Prefill) -> None:
            if prefill.error is not None:
                notice(f"prefill {prefill.utterance!r}: error {prefill.error}")
            elif not terminal:  # on a terminal a line per warm would break the line being typed
                say(f"  [warmed: {prefill.cached_tokens} of {prefill.prompt_tokens} tokens cached]")

        line_task: asyncio.Task[Input] | None = None
        frame_task = asyncio.create_task(client.recv())
        quiet_since = time.perf_counter()
        reading = keystrokes(sys.stdin.fileno(), queue) if terminal else nullcontext()
        if not terminal:
            _stdin_lines(asyncio.get_running_loop(), queue)
        try:
            with reading:
                if args.opener:
                    if terminal:
                        say(PROMPT + args.opener)
                    running = await begin(args.opener)
                else:
                    prompt()
                while not (ended and running is None):
                    await interim.tick()
                    if line_task is None and not ended and (running is None or interrupt):
                        line_task = asyncio.create_task(queue.get())
                    waiting: set[asyncio.Task[Any]] = {frame_task} | ({line_task} if line_task else set())
                    timeout = PING_EVERY_S
                    if (due := interim.deadline()) is not None:
                        timeout = min(timeout, max(due - time.perf_counter(), 0.0))
                    done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                    if not done:
                        if time.perf_counter() - quiet_since < PING_EVERY_S:
                            continue  # woken for a prefill
                        if running is not None and time.perf_counter() - running.sent > args.recv_timeout:
                            raise TimeoutError(f"no end to the reply after {args.recv_timeout:g} s")
                        await client.send("ping", "ping")  # keeps a quiet session open past the idle timeout
                        quiet_since = time.perf_counter()
                        continue
                    quiet_since = time.perf_counter()
                    if line_task in done:
                        (kind, text), line_task = line_task.result(), None
                        if kind == "eof":
                            ended = True
                        elif kind == "keys":
                            ended = not await keys(text)
                        else:
                            await entered(text, True)
                    if frame_task in done:
                        try:
                            frame = frame_task.result()
                        except websockets.ConnectionClosed as closed:
                            say(f"\n[the server closed the connection: {closed}]", file=sys.stderr, flush=True)
                            return {
                                "model": model,
                                "turns": rows(),
                                "closed": str(closed),
                                "failures": [f"the server closed the connection: {closed}", *_failures(turns)],
                            }
                        frame_task = asyncio.create_task(client.recv())
                        if (prefill := interim.answered(frame)) is not None:
                            answered(prefill)
                            continue
                        turn = by_id.get(str(frame.get("request_id")))
                        kind = frame["type"]
                        if turn is None:
                            if kind == "error":
                                notice(f"error: {frame['payload'].get('message')}")
                            continue
                        if kind == "token" and turn is running:
                            turn.record(frame)
                            say(frame["payload"]["text"], end="", flush=True)
                        elif kind in TERMINAL:
                            finish(turn, frame)
                            if turn is running:
                                running = None
                                prompt()
        finally:
            for task in (frame_task, line_task):
                if task is not None:
                    task.cancel()
    return {"model": model, "turns": rows(), "failures": _failures(turns)}


def _failures(turns: list[TurnResult]) -> list[str]:
    """Turns that ended in an `error` (a barge-in's `cancelled` is how live works, not a failure)."""
    return [f"turn {t.utterance!r} ended error" for t in turns if t.outcome == "error"]
