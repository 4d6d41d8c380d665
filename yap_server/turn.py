"""One turn: the user's words enter history, the tool classifier decides, the chat model streams, and
exactly one terminal frame ends it.

A turn runs as its own task. Cancelling the task (cancel, barge-in, idle, disconnect) closes the
engine stream, which aborts the request in the engine; the connection then sends `cancelled`
unless the turn already sent its terminal frame (`terminal_sent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from yap_engines import ChatRequest, ContextTooLongError, EngineError, InferenceEngine, InvalidRequestError, Sampling
from yap_engines.thinking import ThinkSplitter, prompt_ids_open_thinking
from yap_engines.tool import ToolClassifier, ToolDecision

from .sanitize import StreamSanitizer
from .session import Session, TurnOptions
from .settings import ServerSettings
from .wire import error_frame, frame

if TYPE_CHECKING:
    from .observability import TurnTelemetry

Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class TurnDeps:
    """What a turn needs from its connection and server."""

    chat: InferenceEngine | None
    tool: ToolClassifier | None
    tokenizer: Any
    settings: ServerSettings
    send: Send


@dataclass
class Turn:
    """A single request/response exchange on a session."""

    session: Session
    request_id: str
    user_text: str
    sampling: Sampling
    options: TurnOptions
    telemetry: TurnTelemetry
    terminal_sent: bool = False
    spoken_text: str | None = None
    reply_parts: list[str] = field(default_factory=list)  # what the model said (no reasoning)
    streamed: list[str] = field(default_factory=list)  # what the client got (sanitized)
    engine_request_id: str = field(default_factory=lambda: f"yap-{uuid.uuid4().hex}")
    tool_decision: ToolDecision | None = None
    _tool_task: asyncio.Task[ToolDecision] | None = field(default=None, repr=False)

    def _frame(self, kind: str, **payload: Any) -> dict[str, Any]:
        return frame(kind, self.session.session_id, self.request_id, **payload)

    async def _terminal(self, send: Send, message: dict[str, Any]) -> None:
        self.terminal_sent = True  # set before the await: a cancel landing during the send sees it
        self.telemetry.ended(message["type"], message["payload"].get("code"))
        await send(message)

    async def run(self, deps: TurnDeps) -> None:
        """Classify (when the tool part is deployed) and stream the reply; exactly one terminal frame.

        The classification runs alongside the chat model's prefill; the `toolcall` frame is sent
        before the first token. On cancellation the pending classification is dropped, what was
        said is kept in history, and the cancellation propagates.
        """
        started = time.perf_counter()
        session = self.session
        if deps.tool is not None:
            earlier = [m["content"] for m in session.history.messages() if m["role"] == "user"]
            self._tool_task = asyncio.create_task(deps.tool.classify(earlier, self.user_text))
        session.history.add("user", self.user_text)
        try:
            if deps.chat is None:
                await self._send_toolcall(deps.send)
                await self._finish(deps.send, started, None, "stop", None)
                return
            await self._chat(deps, started)
        finally:
            if self._tool_task is not None:
                self._tool_task.cancel()

    async def _chat(self, deps: TurnDeps, started: float) -> None:
        session, settings, send = self.session, deps.settings, deps.send
        assert deps.chat is not None
        try:
            history_budget = min(settings.history_max_tokens, settings.chat_max_len)
            fitted = session.build_prompt(
                deps.tokenizer, settings.chat_max_len, history_budget, settings.history_trim_ratio
            )
        except ContextTooLongError as exc:
            await self._send_toolcall(send)
            await self._terminal(send, error_frame(session.session_id, self.request_id, "context_too_long", str(exc)))
            return
        prompt = fitted.token_ids
        request = ChatRequest(
            self.engine_request_id, prompt, self.sampling, session_id=session.session_id, messages=fitted.messages
        )
        splitter = ThinkSplitter(starts_in_reasoning=prompt_ids_open_thinking(deps.tokenizer, prompt))
        sanitizer = StreamSanitizer() if self.options.sanitize_output else None
        first_token_at: float | None = None
        finish_reason: str | None = "stop"
        usage = None
        telemetry = self.telemetry
        telemetry.generation_started()
        try:
            async with contextlib.aclosing(deps.chat.generate(request)) as stream:
                async for delta in stream:
                    telemetry.delta()
                    await self._emit(splitter.feed(delta.text), sanitizer, send)
                    if first_token_at is None and self.streamed:
                        first_token_at = time.perf_counter()
                        telemetry.first_token(first_token_at - started)
                    if delta.finished:
                        finish_reason, usage = delta.finish_reason, delta.usage
            await self._emit(splitter.finish(), sanitizer, send, final=True)
            await self._send_toolcall(send)  # a reply with no visible text still gets its toolcall first
        except (EngineError, InvalidRequestError) as exc:
            telemetry.report_exception(exc, self.user_text)
            self._remember_reply()
            await self._send_toolcall(send)
            await self._terminal(send, error_frame(session.session_id, self.request_id, "engine_error", str(exc)))
            return
        except BaseException:
            self._remember_reply()
            raise
        finally:
            telemetry.generation_ended(usage)
        self._remember_reply()
        await self._finish(send, started, first_token_at, finish_reason, usage)

    async def _send_toolcall(self, send: Send) -> None:
        """Send the `toolcall` frame once (waiting for the decision); a no-op without a pending one."""
        if self._tool_task is None:
            return
        try:
            decision = await self._tool_task
        except Exception as exc:  # a failing classifier must not take the reply down: it answers "no"
            self.telemetry.report_exception(exc, self.user_text)
            decision = ToolDecision("no", 0.0, "error", 0.0)
        self.tool_decision = decision
        self._tool_task = None
        self.telemetry.tool_classified(decision.status, decision.latency_ms / 1000)
        await send(self._frame("toolcall", status=decision.status, score=decision.score, raw=decision.label))

    async def _finish(
        self, send: Send, started: float, first_token_at: float | None, finish_reason: str | None, usage: Any
    ) -> None:
        done = time.perf_counter()
        ttft = (first_token_at or done) - started
        tool_ms = self.tool_decision.latency_ms if self.tool_decision else None
        await self._terminal(
            send,
            self._frame(
                "done",
                text="".join(self.streamed),
                finish_reason=finish_reason,
                usage=usage.as_dict() if usage else None,
                timings={
                    "tool_ms": tool_ms,
                    "ttft_ms": round(ttft * 1000, 2) if first_token_at else None,
                    "total_ms": round((done - started) * 1000, 2),
                },
            ),
        )

    async def _emit(self, split: Any, sanitizer: StreamSanitizer | None, send: Send, final: bool = False) -> None:
        text = split.content
        if text:
            self.reply_parts.append(text)
        if sanitizer is not None:
            text = sanitizer.feed(text) + (sanitizer.finish() if final else "")
        if split.reasoning and self.options.reasoning == "stream":
            await self._send_toolcall(send)
            await send(self._frame("reasoning", text=split.reasoning))
        if text:
            await self._send_toolcall(send)
            self.streamed.append(text)
            await send(self._frame("token", text=text))

    def _remember_reply(self) -> None:
        """History gets the spoken part when the client said what was spoken, else what was generated."""
        said = self.spoken_text if self.spoken_text is not None else "".join(self.reply_parts)
        if said.strip():
            self.session.history.add("assistant", said)
