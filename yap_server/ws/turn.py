"""One `/ws` turn: the user's words enter history, the tool classifier decides, the chat model streams, and
exactly one terminal frame ends it.

A turn is the connection's `Work`: it runs as a task of the runtime. Cancelling the task (cancel,
barge-in, idle, disconnect, shutdown) closes the engine stream, which aborts the request in the
engine; the runtime then calls `stopped`, which sends `cancelled` unless the turn already sent its
terminal frame (the runtime's once-only guard, `terminal`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from yap_engines import ChatRequest, ContextTooLongError, Sampling
from yap_engines.thinking import ThinkSplit

from ..connection import Terminal
from ..quotas import Admission, QuotaExceededError, QuotaGate
from ..streaming import Classifier, Generation, ToolVerdict, failure_for
from .sanitize import StreamSanitizer
from .session import Session, TurnOptions
from .wire import error_frame, frame, toolcall_payload

if TYPE_CHECKING:
    from ..state import AppState
    from ..telemetry import TurnTelemetry
    from .warm import CacheCover

log = logging.getLogger("yap.ws")

Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Turn:
    """A single request/response exchange on a session. `tool` is None when this turn must not be routed
    (chat-only deployments, followups)."""

    session: Session
    request_id: str
    user_text: str
    sampling: Sampling
    options: TurnOptions
    telemetry: TurnTelemetry
    app: AppState
    tool: Classifier | None
    send: Send
    terminal: Terminal = field(default_factory=Terminal)
    spoken_text: str | None = None
    streamed: list[str] = field(default_factory=list)  # what the client got (sanitized)
    engine_request_id: str = field(default_factory=lambda: f"yap-{uuid.uuid4().hex}")
    verdict: ToolVerdict | None = None
    started: float = field(default_factory=time.perf_counter)
    gate: QuotaGate | None = None  # the connection key's quota, checked before the classifier and the engine
    after: Callable[[], Awaitable[None]] | None = None  # run once the turn has ended by itself (the next warm)
    cover: CacheCover | None = None  # gets the prompt once its first token came (it is cached then; warm.py)
    prompt: list[int] | None = None  # the prompt sent to the chat engine, until `cover` has it
    refused: bool = False  # its key's quota refused it (nothing ran, and no warm follows)

    def _frame(self, kind: str, **payload: Any) -> dict[str, Any]:
        return frame(kind, self.session.session_id, self.request_id, **payload)

    async def _terminal(self, message: dict[str, Any]) -> None:
        if not self.terminal.claim():  # claimed before the await: a cancel landing during the send sees it
            return
        self.telemetry.ended(message["type"], message["payload"].get("code"))
        await self.send(message)

    async def _error(self, code: str, message: str, **extra: Any) -> None:
        await self._send_toolcall()
        await self._terminal(error_frame(self.session.session_id, self.request_id, code, message, **extra))

    # -- Work ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Classify (when routed) and stream the reply; exactly one terminal frame.

        A turn that cannot run (its prompt does not fit, its key's quota refuses it) ends with its error
        before any work: no classification, no `toolcall` frame, and a refused utterance leaves history.
        The classification runs alongside the chat model's prefill; the `toolcall` frame is sent
        before the first token. On cancellation the pending classification is dropped, what was
        said is kept in history, and the cancellation propagates.
        """
        session = self.session
        earlier = [m["content"] for m in session.history.messages() if m["role"] == "user"] if self.tool else []
        session.history.add("user", self.user_text)
        try:
            if self.app.chat is None:
                await self._admit(0)  # a classification alone: the key's request count only
                if self.refused:
                    return
                self._classify(earlier)
                await self._send_toolcall()
                await self._finish(None, "stop", None)
                return
            await self._chat(earlier)
        finally:
            if self.verdict is not None:
                self.verdict.drop()
        if self.after is not None and not self.refused:
            await self.after()

    async def stopped(self, reason: str, notify: bool) -> bool:
        if not self.terminal.claim():
            return False
        self.telemetry.ended("cancelled")
        if notify:
            await self.send(self._frame("cancelled", reason=reason))
        return True

    async def crashed(self, exc: Exception) -> None:
        ids = {"session_id": self.session.session_id, "request_id": self.request_id}
        log.error("turn %s failed: %r", self.request_id, exc, extra=ids)
        self.telemetry.report_exception(exc, self.user_text)
        if self.terminal.claim():
            self.telemetry.ended("error", "internal_error")
            message = "the server failed on this turn; it has been logged"
            await self.send(error_frame(self.session.session_id, self.request_id, "internal_error", message))

    # -- the chat reply ------------------------------------------------------------------------
    async def _admit(self, tokens: int) -> Admission | None:
        """Ask the key's quota for `tokens` (prompt + max_tokens; 0 for a classification alone) before any
        work: its admission (None without a quota). A refused turn sets `refused` and ends here with its
        error, and its utterance leaves history, so a retry after `retry_after_s` sends it again."""
        if self.gate is None:
            return None
        try:
            return await self.gate.admit(tokens)
        except QuotaExceededError as exc:
            self.refused = True
            self.session.history.withdraw_last_turn()
            failure = failure_for(exc)
            await self._error(failure.code, failure.message, **failure.extra)
            return None

    def _classify(self, earlier: list[str]) -> None:
        """Start the classification (when this turn is routed); `earlier`: the session's previous utterances."""
        if self.tool is not None:
            self.verdict = ToolVerdict(self.tool, earlier, self.user_text, self.telemetry)

    async def _chat(self, earlier: list[str]) -> None:
        session, settings, chat = self.session, self.app.settings, self.app.chat
        assert chat is not None
        try:
            history_budget = min(settings.history_max_tokens, self.app.chat_max_len)
            fitted = session.build_prompt(
                self.app.tokenizer, self.app.chat_max_len, history_budget, settings.history_trim_ratio
            )
        except ContextTooLongError as exc:
            await self._error("context_too_long", str(exc))
            return
        prompt = fitted.token_ids
        admission = await self._admit(len(prompt) + self.sampling.max_tokens)
        if self.refused:
            return
        self._classify(earlier)  # admitted: only now does the classifier see the utterance
        self.prompt = prompt
        request = ChatRequest(
            self.engine_request_id, prompt, self.sampling, session_id=session.session_id, messages=fitted.messages
        )
        generation = Generation.for_prompt(
            chat,
            request,
            self.app.tokenizer,
            self.telemetry,
            reasoning=self.options.reasoning == "stream",
            filters=[StreamSanitizer()] if self.options.sanitize_output else (),
            flush_s=self.app.stream_flush_s,
            started=self.started,
            admission=admission,
        )
        try:
            await generation.run(self)
        finally:  # cancelled too: what was said stays in history
            self._remember_reply(generation.content)
        if generation.failure is not None:
            await self._error(generation.failure.code, generation.failure.message, **generation.failure.extra)
            return
        await self._send_toolcall()  # a reply with no visible text still gets its toolcall first
        await self._finish(generation.first_token_at, generation.finish_reason, generation.usage)

    async def emit(self, piece: ThinkSplit) -> bool:
        """The turn's frames for one piece: `toolcall` first (once), then `reasoning`, then `token`."""
        if self.prompt is not None and self.cover is not None:  # the first piece: the prompt is computed
            self.cover.record(self.prompt)
            self.prompt = None
        if self.verdict is not None and self.verdict.pending:
            await self._send_toolcall()
        if piece.reasoning:
            await self.send(self._frame("reasoning", text=piece.reasoning))
        if piece.content:
            self.streamed.append(piece.content)
            await self.send(self._frame("token", text=piece.content))
        return True

    async def _send_toolcall(self) -> None:
        """Send the `toolcall` frame once (waiting for the decision); a no-op without a pending one."""
        verdict = self.verdict
        if verdict is None or not verdict.pending:
            return
        decision = await verdict.result()
        payload = toolcall_payload(decision, self.app.settings.responses_tool_name)
        await self.send(self._frame("toolcall", **payload))

    async def _finish(self, first_token_at: float | None, finish_reason: str | None, usage: Any) -> None:
        done = time.perf_counter()
        ttft = (first_token_at or done) - self.started
        decision = self.verdict.decision if self.verdict is not None else None
        if usage is not None:
            self.app.telemetry.prompt_cached(usage.prompt_tokens, usage.cached_tokens)
        await self._terminal(
            self._frame(
                "done",
                text="".join(self.streamed),
                finish_reason=finish_reason,
                usage=usage.as_dict() if usage else None,
                timings={
                    "tool_ms": decision.latency_ms if decision else None,
                    "ttft_ms": round(ttft * 1000, 2) if first_token_at else None,
                    "total_ms": round((done - self.started) * 1000, 2),
                },
            ),
        )

    def _remember_reply(self, reply: str) -> None:
        """History gets the spoken part when the client said what was spoken, else `reply` (what the model
        said, no reasoning)."""
        said = self.spoken_text if self.spoken_text is not None else reply
        if said.strip():
            self.session.history.add("assistant", said)
