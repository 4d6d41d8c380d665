"""The one turn loop of every `yap client` command: a thin async client over a `/ws` connection.

`YapClient` sends envelopes and reads frames (each read bounded by the receive timeout), `start`s a
session and runs turns (`message` or `followup`), timing the milestones of each in a `TurnResult`.
A server `error` answering a `start` raises `ServerError`; a receive that waits past the timeout
raises `TimeoutError` naming it.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..urls import endpoint_url

SENTENCE_END = re.compile(r"[.!?](\s|$)")
TERMINAL = ("done", "cancelled", "error")
STREAM = ("toolcall", "token", "reasoning", *TERMINAL)
"""The frames that belong to a turn's stream: after its terminal frame none of them may follow."""


def ws_url(server: str, key: str | None) -> str:
    """The `/ws` URL for a server origin or URL, with `api_key` in the query."""
    return endpoint_url(server, key, "/ws")


class ServerError(RuntimeError):
    """An `error` frame where the client needed something else (e.g. the answer to a `start`)."""

    def __init__(self, payload: dict[str, Any], doing: str) -> None:
        self.code = str(payload.get("code"))
        self.payload = payload
        detail = payload.get("message", "")
        if "retry_after_s" in payload:
            detail = f"{detail} (retry_after_s={payload['retry_after_s']})"
        super().__init__(f"{doing}: server error {self.code}: {detail}")


@dataclass
class TurnResult:
    """One turn as the client saw it (every command's record, `live`'s included): what was said (a
    followup's analysis_text), what streamed, how it ended. Times are ms from `sent`, the moment the
    turn's frame went out."""

    request_id: str
    utterance: str = ""
    sent: float = field(default_factory=time.perf_counter)
    outcome: str = ""
    text: str = ""
    toolcall_ms: float | None = None
    ttfb_ms: float | None = None
    first3_ms: float | None = None
    sentence_ms: float | None = None
    total_ms: float = 0.0
    chunks: int = 0
    cancel_sent_ms: float | None = None
    spoken_text: str | None = None
    usage: dict[str, int] | None = None
    terminal: dict[str, Any] = field(default_factory=dict)
    frames: list[dict[str, Any]] = field(default_factory=list)

    def since(self) -> float:
        """ms since the turn's frame was sent."""
        return round((time.perf_counter() - self.sent) * 1000, 2)

    def record(self, frame: dict[str, Any]) -> None:
        """Take in a frame of this turn: its text and the time of each milestone (tool decision, first
        token, first three words, first sentence, end)."""
        kind = frame["type"]
        if kind == "toolcall" and self.toolcall_ms is None:
            self.toolcall_ms = self.since()
        elif kind == "token":
            piece = frame["payload"]["text"]
            self.text += piece
            self.chunks += 1
            if self.ttfb_ms is None:
                self.ttfb_ms = self.since()
            if self.first3_ms is None and len(self.text.split()) >= 3:
                self.first3_ms = self.since()
            # only the new piece (and the character before it) can complete the first sentence
            if self.sentence_ms is None and SENTENCE_END.search(self.text, len(self.text) - len(piece) - 1):
                self.sentence_ms = self.since()
        elif kind in TERMINAL:
            self.outcome = kind
            self.total_ms = self.since()
            self.terminal = frame["payload"]
            self.usage = frame["payload"].get("usage")

    @property
    def completion_tokens(self) -> int | None:
        """The reply's length in tokens, from the terminal frame's usage (None without one)."""
        return (self.usage or {}).get("completion_tokens")

    @property
    def prompt_tokens(self) -> int | None:
        """The prompt's length in tokens, from the terminal frame's usage (None without one)."""
        return (self.usage or {}).get("prompt_tokens")

    @property
    def cached_tokens(self) -> int | None:
        """How many prompt tokens came from the engine's prefix cache (None without usage)."""
        return (self.usage or {}).get("cached_tokens")

    @property
    def toolcall(self) -> dict[str, Any] | None:
        """The payload of the turn's `toolcall` frame (None when none came)."""
        return next((f["payload"] for f in self.frames if f["type"] == "toolcall"), None)

    @property
    def toolcall_before_first_token(self) -> bool:
        """Whether the `toolcall` frame came before the first `token` (True when no token came at all)."""
        kinds = [f["type"] for f in self.frames]
        if "toolcall" not in kinds:
            return False
        return "token" not in kinds or kinds.index("toolcall") < kinds.index("token")

    @property
    def cancel_to_terminal_ms(self) -> float | None:
        """From sending `cancel` to the terminal frame (None when no cancel was sent)."""
        return None if self.cancel_sent_ms is None else round(self.total_ms - self.cancel_sent_ms, 2)


class YapClient:
    """A thin async client: send frames, run turns, keep timing. `recv_timeout` bounds every read."""

    def __init__(self, connection: Any, session_id: str | None = None, recv_timeout: float | None = 60.0) -> None:
        self.connection = connection
        self.session_id = session_id or f"cli-{uuid.uuid4().hex[:8]}"
        self.recv_timeout = recv_timeout

    async def send(self, kind: str, request_id: str, **payload: Any) -> None:
        frame = {"type": kind, "session_id": self.session_id, "request_id": request_id, "payload": payload}
        await self.connection.send(json.dumps(frame))

    async def recv(self, within: float | None = None) -> dict[str, Any]:
        """The next frame; `TimeoutError` after `within` (default: the receive timeout; None or inf: no
        limit) seconds of silence."""
        wait = self.recv_timeout if within is None else within
        if wait is None or wait == math.inf:
            return dict(json.loads(await self.connection.recv()))
        try:
            return dict(json.loads(await asyncio.wait_for(self.connection.recv(), wait)))
        except TimeoutError:
            raise TimeoutError(f"no frame from the server within {wait:g} s") from None

    async def start(self, persona: str, **payload: Any) -> dict[str, Any]:
        """Send `start` (chat_prompt `persona` plus `payload`: gender, personality, history, sampling) and
        return its `ack` frame; an `error` answer raises `ServerError`."""
        await self.send("start", f"start-{uuid.uuid4().hex[:6]}", chat_prompt=persona, **payload)
        while (frame := await self.recv())["type"] != "ack":
            if frame["type"] == "error":
                raise ServerError(frame["payload"], "start refused")
        return frame

    async def end(self) -> None:
        """Send `end` (the server answers `session_end` and closes 1000)."""
        await self.send("end", f"end-{uuid.uuid4().hex[:6]}")

    async def drain(self, request_id: str, seconds: float) -> list[dict[str, Any]]:
        """Read for `seconds` and return the frames of `request_id` that arrived (there should be none
        after that turn's terminal frame). Stops early when the connection closes."""
        import websockets

        stray = []
        until = time.perf_counter() + seconds
        try:
            while (left := until - time.perf_counter()) > 0:
                try:
                    frame = await self.recv(within=left)
                except TimeoutError:
                    break
                if frame.get("request_id") == request_id:
                    stray.append(frame)
        except websockets.ConnectionClosed:
            pass
        return stray

    async def turn(
        self,
        text: str,
        *,
        kind: str = "message",
        sampling: dict[str, Any] | None = None,
        cancel_after: float | None = None,
        toolcall_within: float | None = None,
        echo: bool = False,
    ) -> TurnResult:
        """Send a `message` (or a `followup`, `text` its analysis_text) and read until its terminal frame,
        timing the milestones.

        `cancel_after`: send `cancel` that many seconds after the first token (reading on meanwhile).
        `toolcall_within`: raise `TimeoutError` when neither a `toolcall` nor a token nor the end came
        within that many seconds (the wait for the tool decision).
        """
        result = TurnResult(f"turn-{uuid.uuid4().hex[:8]}", text)
        if kind == "followup":
            await self.send("followup", result.request_id, analysis_text=text)
        else:
            extra = {"sampling": sampling} if sampling else {}
            await self.send(kind, result.request_id, user_utterance=text, **extra)
        sent = result.sent
        cancel_at: float | None = None

        while True:
            if cancel_at is not None and time.perf_counter() >= cancel_at:
                cancel_at = None
                result.cancel_sent_ms = result.since()
                await self.send("cancel", result.request_id)
            now = time.perf_counter()
            wait = math.inf if self.recv_timeout is None else self.recv_timeout
            if cancel_at is not None:
                wait = min(wait, max(cancel_at - now, 0.0))
            deciding = toolcall_within is not None and result.toolcall_ms is None and result.ttfb_ms is None
            if deciding:
                wait = min(wait, max(sent + toolcall_within - now, 0.0))  # type: ignore[operator]
            try:
                frame = await self.recv(within=wait)
            except TimeoutError:
                if cancel_at is not None and time.perf_counter() >= cancel_at:
                    continue  # time to cancel (at the top of the loop)
                if deciding and time.perf_counter() - sent >= toolcall_within:  # type: ignore[operator]
                    raise TimeoutError(f"no tool decision within {toolcall_within:g} s") from None
                raise
            result.frames.append(frame)
            if frame.get("request_id") != result.request_id:
                continue
            first_token = frame["type"] == "token" and result.ttfb_ms is None
            result.record(frame)
            if frame["type"] == "token":
                if echo:
                    print(frame["payload"]["text"], end="", flush=True)
                if first_token and cancel_after is not None:
                    cancel_at = time.perf_counter() + cancel_after
            elif frame["type"] in TERMINAL:
                if echo:
                    print()
                return result


def turn_failure(result: TurnResult, what: str = "turn") -> str | None:
    """Why a turn that should have ended `done` did not (None when it did)."""
    if result.outcome == "done":
        return None
    detail = result.terminal.get("code") or result.terminal.get("reason") or ""
    message = result.terminal.get("message")
    return f"{what} ended {result.outcome}" + (f" ({detail}: {message})" if message else f" ({detail})" * bool(detail))


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
