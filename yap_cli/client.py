"""`yap client ...`: test clients for a running Yap server over a real WebSocket.

`--server` takes an origin (`http://127.0.0.1:8000`, `ws://host:port`) or a full URL; `/ws` and the
API key (`--key`, env `TEXT_API_KEY`) are added. Every command prints what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from .client_completions import add_completions_command

SENTENCE_END = re.compile(r"[.!?](\s|$)")
PING_EVERY_S = 20.0  # `yap client live` pings a quiet session well inside the server's idle timeout
# Worded for the embedded default (SmolLM2-135M-Instruct), which answers it in plain English at temperature 0.
PERSONA = "You are a helpful, brief voice assistant. Answer in one short sentence."
CONVERSATION = (
    "Hi there! How are you today?",
    "What's a good name for a cat?",
    "Can you tell me a fun fact about space?",
    "How long does it take light from the sun to reach us?",
    "What should I cook for dinner tonight?",
    "Give me a quick tip for sleeping better.",
    "What's the capital of Australia?",
    "Tell me a very short joke.",
    "How do I stay focused while working?",
    "Thanks, that's all for now. Goodbye!",
)


def ws_url(server: str, key: str | None) -> str:
    """The `/ws` URL for a server origin or URL, with `api_key` in the query."""
    parts = urlsplit(server if "://" in server else f"ws://{server}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    query = parts.query
    if key and "api_key=" not in query:
        query = "&".join(q for q in (query, urlencode({"api_key": key})) if q)
    return urlunsplit((scheme, parts.netloc, path, query, ""))


@dataclass
class TurnResult:
    """What one turn looked like from the client."""

    request_id: str
    outcome: str = ""
    text: str = ""
    toolcall_ms: float | None = None
    ttfb_ms: float | None = None
    first3_ms: float | None = None
    sentence_ms: float | None = None
    total_ms: float = 0.0
    usage: dict[str, int] | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)


class YapClient:
    """A thin async client: send frames, run turns, keep timing."""

    def __init__(self, connection: Any, session_id: str | None = None) -> None:
        self.connection = connection
        self.session_id = session_id or f"cli-{uuid.uuid4().hex[:8]}"

    async def send(self, kind: str, request_id: str, **payload: Any) -> None:
        frame = {"type": kind, "session_id": self.session_id, "request_id": request_id, "payload": payload}
        await self.connection.send(json.dumps(frame))

    async def recv(self) -> dict[str, Any]:
        return dict(json.loads(await self.connection.recv()))

    async def start(self, persona: str = PERSONA, **payload: Any) -> dict[str, Any]:
        await self.send("start", f"start-{uuid.uuid4().hex[:6]}", chat_prompt=persona, **payload)
        while (frame := await self.recv())["type"] != "ack":
            if frame["type"] == "error":
                raise RuntimeError(f"start refused: {frame['payload']}")
        return frame

    async def turn(
        self,
        utterance: str,
        *,
        sampling: dict[str, Any] | None = None,
        cancel_after_first_token: bool = False,
        echo: bool = False,
    ) -> TurnResult:
        """Send a message and read until its terminal frame, timing the milestones.

        With `cancel_after_first_token`, `total_ms` is the time from sending `cancel` to the terminal frame.
        """
        result = TurnResult(f"turn-{uuid.uuid4().hex[:8]}")
        sent = time.perf_counter()
        extra = {"sampling": sampling} if sampling else {}
        await self.send("message", result.request_id, user_utterance=utterance, **extra)

        def since() -> float:
            return round((time.perf_counter() - sent) * 1000, 2)

        while True:
            frame = await self.recv()
            result.frames.append(frame)
            if frame.get("request_id") != result.request_id:
                continue
            kind = frame["type"]
            if kind == "toolcall" and result.toolcall_ms is None:
                result.toolcall_ms = since()
            elif kind == "token":
                piece = frame["payload"]["text"]
                result.text += piece
                if echo:
                    print(piece, end="", flush=True)
                if result.ttfb_ms is None:
                    result.ttfb_ms = since()
                    if cancel_after_first_token:
                        sent = time.perf_counter()  # from here on, time the cancel
                        await self.send("cancel", result.request_id)
                if result.first3_ms is None and len(result.text.split()) >= 3:
                    result.first3_ms = since()
                # only the new piece (and the character before it) can complete the first sentence
                if result.sentence_ms is None and SENTENCE_END.search(result.text, len(result.text) - len(piece) - 1):
                    result.sentence_ms = since()
            elif kind in ("done", "cancelled", "error"):
                result.outcome = kind
                result.total_ms = since()
                result.usage = frame["payload"].get("usage")
                if echo:
                    print()
                return result


def summarize(values: list[float]) -> dict[str, float | None]:
    """avg/p50/p90/p95 of a list of milliseconds (None when empty)."""
    if not values:
        return {"avg": None, "p50": None, "p90": None, "p95": None}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))], 2)

    return {"avg": round(statistics.fmean(ordered), 2), "p50": pct(0.5), "p90": pct(0.9), "p95": pct(0.95)}


async def _connect(args: argparse.Namespace) -> Any:
    import websockets

    return await websockets.connect(ws_url(args.server, args.key), max_size=None, open_timeout=args.timeout)


async def warmup(args: argparse.Namespace) -> dict[str, Any]:
    """connect, start and stream one reply (the first-token latency)"""
    async with await _connect(args) as connection:
        client = YapClient(connection)
        await client.start()
        first = await client.turn("Hello! Who are you?", echo=True)
        report: dict[str, Any] = {"outcome": first.outcome, "ttfb_ms": first.ttfb_ms, "total_ms": first.total_ms}
        if args.double_ttfb:
            second = await client.turn("And what can you help me with?", echo=True)
            report["second_ttfb_ms"] = second.ttfb_ms
        await client.send("end", "end")
    return report


async def conversation(args: argparse.Namespace) -> dict[str, Any]:
    """a 10-turn conversation; FIRST row and avg/p50/p90/p95 over turns 2+"""
    async with await _connect(args) as connection:
        client = YapClient(connection)
        await client.start()
        turns = []
        for line in CONVERSATION[: args.turns]:
            if not args.json:  # show the words, not only the timings
                print(f"you> {line}\nassistant> ", end="", flush=True)
            turns.append(await client.turn(line, echo=not args.json))
        await client.send("end", "end")
    rest = turns[1:]
    metrics = ("ttfb_ms", "first3_ms", "sentence_ms")
    report: dict[str, Any] = {
        "FIRST": {m: getattr(turns[0], m) for m in metrics},
        **{m: summarize([v for t in rest if (v := getattr(t, m)) is not None]) for m in metrics},
        "outcomes": [t.outcome for t in turns],
    }
    print(f"{'':8}{'ttfb':>10}{'first 3 words':>15}{'first sentence':>16}")
    widths = dict(zip(metrics, (10, 15, 16), strict=True))
    print(f"{'FIRST':8}" + "".join(f"{_ms(report['FIRST'][m]):>{widths[m]}}" for m in metrics))
    for stat in ("avg", "p50", "p90", "p95"):
        print(f"{stat:8}" + "".join(f"{_ms(report[m][stat]):>{widths[m]}}" for m in metrics))
    return report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


async def cancel(args: argparse.Namespace) -> dict[str, Any]:
    """cancel a reply after its first token; cancel-to-cancelled latency"""
    async with await _connect(args) as connection:
        client = YapClient(connection)
        await client.start()
        result = await client.turn("Tell me a long story about the sea.", cancel_after_first_token=True)
        await client.send("end", "end")
    return {"outcome": result.outcome, "ttfb_ms": result.ttfb_ms, "cancel_to_cancelled_ms": result.total_ms}


async def idle(args: argparse.Namespace) -> dict[str, Any]:
    """stay silent until the server closes the idle connection"""
    import websockets

    async with await _connect(args) as connection:
        client = YapClient(connection)
        await client.start()
        started = time.perf_counter()
        try:
            while True:
                await asyncio.wait_for(client.recv(), timeout=args.wait)
        except websockets.ConnectionClosed as closed:
            code, reason = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, None)
            after = round(time.perf_counter() - started, 2)
            return {"closed_after_s": after, "close_code": code, "close_reason": reason}
        except TimeoutError:
            return {"closed_after_s": None, "close_code": None, "note": f"still open after {args.wait} s"}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """many sessions at once; p50/p95 of toolcall, first token, first 3 words, first sentence"""
    gate = asyncio.Semaphore(args.concurrency)

    async def one_session(index: int) -> TurnResult:
        async with gate, await _connect(args) as connection:
            client = YapClient(connection, session_id=f"bench-{index}")
            await client.start()
            result = await asyncio.wait_for(client.turn(CONVERSATION[index % len(CONVERSATION)]), args.timeout)
            await client.send("end", "end")
            return result

    started = time.perf_counter()
    results = await asyncio.gather(*(one_session(i) for i in range(args.sessions)), return_exceptions=True)
    wall = time.perf_counter() - started
    ok = [r for r in results if isinstance(r, TurnResult) and r.outcome == "done"]
    report: dict[str, Any] = {
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "completed": len(ok),
        "failed": args.sessions - len(ok),
        "wall_s": round(wall, 2),
    }
    for metric in ("toolcall_ms", "ttfb_ms", "first3_ms", "sentence_ms"):
        values = [v for r in ok if (v := getattr(r, metric)) is not None]
        stats = summarize(values)
        report[metric] = {"p50": stats["p50"], "p95": stats["p95"], "n": len(values)}
    if not args.json:
        for metric in ("toolcall_ms", "ttfb_ms", "first3_ms", "sentence_ms"):
            print(f"{metric:12} p50 {_ms(report[metric]['p50']):>12}  p95 {_ms(report[metric]['p95']):>12}")
    return report


def tool_decision(payload: dict[str, Any] | None) -> str:
    """The decision ("yes"/"no") of a `toolcall` payload, read as the seed system's clients read it: `raw` is the JSON
    array of tool calls (`[{"name": ...}]` for yes, `[]` for no), and `status` must agree; "none" without one."""
    if payload is None:
        return "none"
    raw, status = payload.get("raw"), payload.get("status")
    if not isinstance(raw, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in raw):
        raise ValueError(f"malformed toolcall: raw must be a JSON array of tool calls, got {raw!r}")
    decided = "yes" if raw else "no"
    if status != decided:
        raise ValueError(f"malformed toolcall: status {status!r} but raw {raw!r}")
    return decided


async def tool(args: argparse.Namespace) -> dict[str, Any]:
    """replay the tool regression cases; step and case accuracy, false positives and negatives"""
    from .tool_cases import CASES

    gate = asyncio.Semaphore(args.concurrency)
    cases = CASES[: args.limit] if args.limit else CASES

    async def replay(name: str, steps: tuple[tuple[str, str], ...]) -> list[tuple[str, str, str]]:
        async with gate, await _connect(args) as connection:
            client = YapClient(connection, session_id=f"tool-{name}")
            await client.start()
            outcomes = []
            for text, expected in steps:
                result = await asyncio.wait_for(client.turn(text), args.timeout)
                toolcall = next((f["payload"] for f in result.frames if f["type"] == "toolcall"), None)
                outcomes.append((text, expected, tool_decision(toolcall)))
            await client.send("end", "end")
            return outcomes

    results = await asyncio.gather(*(replay(name, steps) for name, steps in cases))
    steps = [step for case in results for step in case]
    report: dict[str, Any] = {
        "cases": len(results),
        "steps": len(steps),
        "step_accuracy": round(sum(e == g for _, e, g in steps) / max(len(steps), 1), 4),
        "case_accuracy": round(sum(all(e == g for _, e, g in c) for c in results) / max(len(results), 1), 4),
        "false_positives": [t for t, e, g in steps if e == "no" and g == "yes"],
        "false_negatives": [t for t, e, g in steps if e == "yes" and g != "yes"],
    }
    if not args.json:
        print(f"step accuracy {report['step_accuracy']:.2%}, case accuracy {report['case_accuracy']:.2%}")
        for text in report["false_positives"]:
            print(f"  false positive: {text}")
        for text in report["false_negatives"]:
            print(f"  false negative: {text}")
    return report


@dataclass
class LiveTurn:
    """One turn of `yap client live`: what was said, what streamed, how it ended."""

    utterance: str
    request_id: str
    sent: float
    text: str = ""
    outcome: str = ""
    ttfb_ms: float | None = None
    completion_tokens: int | None = None
    spoken_text: str | None = None

    def report(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "utterance": self.utterance,
            "outcome": self.outcome,
            "ttfb_ms": self.ttfb_ms,
            "text": self.text,
            "completion_tokens": self.completion_tokens,
        }
        if self.spoken_text is not None:
            row["spoken_text"] = self.spoken_text
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
    sampling = {k: v for k, v in (("temperature", args.temperature), ("max_tokens", args.max_tokens)) if v is not None}
    turns: list[LiveTurn] = []
    async with await _connect(args) as connection:
        client = YapClient(connection)
        ack = await client.start(args.persona)
        model = ack["payload"].get("model")
        say(f"[connected to {model}; type a line and press enter, end of input quits]", file=sys.stderr, flush=True)
        running: LiveTurn | None = None
        by_id: dict[str, LiveTurn] = {}

        async def begin(utterance: str) -> LiveTurn:
            turn = LiveTurn(utterance, f"live-{uuid.uuid4().hex[:8]}", time.perf_counter())
            turns.append(turn)
            by_id[turn.request_id] = turn
            extra = {"sampling": sampling} if sampling else {}
            await client.send("message", turn.request_id, user_utterance=utterance, **extra)
            say("assistant> ", end="", flush=True)
            return turn

        def finish(turn: LiveTurn, frame: dict[str, Any]) -> None:
            turn.outcome = frame["type"]
            payload = frame["payload"]
            turn.completion_tokens = (payload.get("usage") or {}).get("completion_tokens")
            if turn is running:
                detail = payload.get("message") or payload.get("finish_reason") or payload.get("reason")
                say(f"\n  [{turn.outcome}: {detail}; first token {_ms(turn.ttfb_ms)}]", flush=True)

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
                    if running is not None and time.perf_counter() - running.sent > args.timeout:
                        raise TimeoutError(f"no end to the reply after {args.timeout} s")
                    await client.send("ping", "ping")  # keeps a quiet session open past the idle timeout
                    continue
                if line_task in done:
                    line, line_task = line_task.result(), None
                    if line is None:
                        ended = True
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
                        return {"model": model, "turns": [t.report() for t in turns], "closed": str(closed)}
                    frame_task = asyncio.create_task(client.recv())
                    turn = by_id.get(str(frame.get("request_id")))
                    kind = frame["type"]
                    if turn is None:
                        if kind == "error":
                            say(f"\n  [error: {frame['payload'].get('message')}]", flush=True)
                        continue
                    if kind == "token" and turn is running:
                        if turn.ttfb_ms is None:
                            turn.ttfb_ms = round((time.perf_counter() - turn.sent) * 1000, 1)
                        turn.text += frame["payload"]["text"]
                        say(frame["payload"]["text"], end="", flush=True)
                    elif kind in ("done", "cancelled", "error"):
                        finish(turn, frame)
                        if turn is running:
                            running = None
        finally:
            for task in (frame_task, line_task):
                if task is not None:
                    task.cancel()
        await client.send("end", "end")
    return {"model": model, "turns": [t.report() for t in turns]}


COMMANDS = {
    "warmup": warmup,
    "conversation": conversation,
    "cancel": cancel,
    "idle": idle,
    "bench": bench,
    "tool": tool,
    "live": live,
}


def add_client_commands(commands: Any) -> None:
    """Register `yap client <command>` on the CLI's subparsers."""
    parser = commands.add_parser("client", help="test clients for a running server")
    sub = parser.add_subparsers(dest="client_command", required=True)
    for name, fn in COMMANDS.items():
        command = sub.add_parser(name, help=(fn.__doc__ or name).strip().splitlines()[0])
        command.add_argument("--server", default="http://127.0.0.1:8000", help="origin or full URL of the server")
        command.add_argument("--key", default=os.environ.get("TEXT_API_KEY"), help="API key (env TEXT_API_KEY)")
        command.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a connection/turn")
        command.add_argument("--json", action="store_true", help="print only the JSON report")
        command.set_defaults(run=run_client, client_fn=fn)
    sub.choices["warmup"].add_argument("--double-ttfb", action="store_true", help="time a second turn as well")
    sub.choices["conversation"].add_argument("--turns", type=int, default=10, help="turns of the script to run")
    sub.choices["idle"].add_argument("--wait", type=float, default=200.0, help="seconds to wait for the close")
    sub.choices["bench"].add_argument("-n", "--sessions", type=int, default=20, help="sessions in all")
    sub.choices["bench"].add_argument("-c", "--concurrency", type=int, default=5, help="sessions at once")
    sub.choices["tool"].add_argument("--concurrency", type=int, default=4, help="cases replayed at once")
    sub.choices["tool"].add_argument("--limit", type=int, default=0, help="replay only the first N cases")
    live_command = sub.choices["live"]
    live_command.add_argument("opener", nargs="?", help="a first message to send before reading input")
    live_command.add_argument("-p", "--persona", default=PERSONA, help="the system prompt (chat_prompt)")
    live_command.add_argument("--temperature", type=float, help="sampling temperature (default: the server's)")
    live_command.add_argument("--max-tokens", type=int, help="reply cap in tokens (default: the server's)")
    live_command.add_argument(
        "--interrupt",
        action="store_true",
        help="let a line read from a pipe barge in on a streaming reply (always so on a terminal)",
    )
    add_completions_command(sub)


def run_client(args: argparse.Namespace) -> int:
    report = asyncio.run(args.client_fn(args))
    print(json.dumps(report, default=str))
    return 0
