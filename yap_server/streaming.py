"""THE generation pipeline: every route that generates (`/ws`, `/v1/chat/completions`, `/v1/responses`,
each pass of a `/ws/completions` job) streams an engine's reply through `Generation`, built by one
constructor, `Generation.for_prompt`, which works out from the prompt ids whether the reply starts inside
a think block.

`Generation.run(sink)` reads the engine stream (through `yap_engines.protocol.consume`, the one
stream loop), splits `<think>` reasoning from the answer, passes the answer through the route's
text filters (the `/ws` sanitizer, strict JSON, edge trimming), records telemetry, and hands each
piece to the route's `Sink` at one place, `Generation._flush`: the single point where tokens become
frames. Engine errors become a `Failure` through one table (`failure_for`); cancellation propagates
and, by closing the stream, aborts the engine request.

The tool classifier's one policy is here too (`ToolVerdict`): a classifier that fails or times out
answers `no`, the failure is reported, and the chat reply still streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from yap_engines import ChatRequest, Delta, EngineHealth, InferenceEngine, Usage
from yap_engines.errors import (
    ContextTooLongError,
    EngineDeadError,
    EngineError,
    InvalidRequestError,
    InvalidSamplingError,
    UnsupportedFeature,
)
from yap_engines.protocol import OnDelta, consume
from yap_engines.thinking import ThinkSplit, ThinkSplitter, prompt_ids_open_thinking
from yap_engines.tool import ToolDecision
from yap_engines.tool_calls import ToolCall, ToolCallParser

from .quotas import Admission, QuotaExceededError, QuotaGate

if TYPE_CHECKING:
    from .telemetry import TurnTelemetry


# -- engine errors: one table --------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """An engine error as every route reports it: Yap's `code`, the HTTP `status`, OpenAI's code and type."""

    code: str
    status: int
    openai_code: str
    openai_type: str
    message: str
    extra: Mapping[str, Any] = field(default_factory=dict)  # what the route's error frame adds (retry_after_s…)
    headers: Mapping[str, str] = field(default_factory=dict)  # what an HTTP answer adds (Retry-After…)


# Most specific first. (Yap code, HTTP status, OpenAI code, OpenAI type, message template.)
ENGINE_ERRORS: tuple[tuple[type[Exception], str, int, str, str, str], ...] = (
    (ContextTooLongError, "context_too_long", 400, "context_length_exceeded", "invalid_request_error", "{exc}"),
    (InvalidSamplingError, "invalid_sampling", 400, "invalid_value", "invalid_request_error", "{exc}"),
    (UnsupportedFeature, "unsupported", 400, "unsupported_parameter", "invalid_request_error", "{exc}"),
    (InvalidRequestError, "invalid_request", 400, "invalid_request", "invalid_request_error", "{exc}"),
    (
        EngineDeadError,
        "engine_error",
        503,
        "engine_unavailable",
        "server_error",
        "the chat engine is not running ({exc}); retry later, /healthz shows when it is back",
    ),
    (
        EngineError,
        "engine_error",
        500,
        "engine_error",
        "server_error",
        "the chat engine failed this request ({exc}); retry it",
    ),
)


def failure_for(exc: EngineError) -> Failure:
    """The `Failure` for an engine error (the first row of `ENGINE_ERRORS` it is an instance of).

    A request its key's quota refused (`QuotaExceededError`, raised before the engine saw it) travels the
    same path: `rate_limited` (429; `limits_unavailable`, 503, when the rate-limit store is down and the
    server fails closed), OpenAI's `rate_limit_exceeded`, with `retry_after_s` and the rate-limit headers."""
    if isinstance(exc, QuotaExceededError):
        refusal = exc.refusal
        code = "rate_limited" if refusal.status == 429 else refusal.kind
        openai_type = "tokens" if refusal.kind in ("tokens", "daily_tokens") else "requests"
        openai_type = openai_type if refusal.status == 429 else "server_error"
        return Failure(
            code, refusal.status, "rate_limit_exceeded", openai_type, str(exc), refusal.extra(), refusal.http_headers()
        )
    for kind, code, status, openai_code, openai_type, template in ENGINE_ERRORS:
        if isinstance(exc, kind):
            return Failure(code, status, openai_code, openai_type, template.format(exc=exc))
    raise TypeError(f"not an engine error: {exc!r}")  # pragma: no cover - EngineError is the last row


# -- the tool classifier -------------------------------------------------------------------------


class Classifier(Protocol):
    """The tool classifier's contract (`yap_engines.tool.ToolClassifier`)."""

    name: str
    model_id: str | None

    async def classify(self, history: Sequence[str], utterance: str) -> ToolDecision: ...

    async def health(self) -> EngineHealth: ...

    async def aclose(self) -> None: ...


FAILED_DECISION = ToolDecision("no", 0.0, "error", 0.0)


class ToolVerdict:
    """One classification, started at once and awaited when its answer is needed.

    The policy every route shares: a classifier that raises answers `no` (label `error`) and the
    failure is reported; one that times out answers `no` itself. Either way the reply streams."""

    def __init__(
        self, classifier: Classifier, history: Sequence[str], utterance: str, telemetry: TurnTelemetry
    ) -> None:
        self.telemetry = telemetry
        self.utterance = utterance
        self._task: asyncio.Task[ToolDecision] | None = asyncio.create_task(classifier.classify(history, utterance))
        self.decision: ToolDecision | None = None

    @property
    def pending(self) -> bool:
        return self._task is not None

    async def result(self) -> ToolDecision:
        """The decision (waiting for it the first time); never raises but for cancellation."""
        if self._task is not None:
            task, self._task = self._task, None
            try:
                decision = await task
            except Exception as exc:
                self.telemetry.report_exception(exc, self.utterance)
                decision = FAILED_DECISION
            self.telemetry.tool_classified(decision.status, decision.latency_ms / 1000)
            self.decision = decision
        assert self.decision is not None
        return self.decision

    def drop(self) -> None:
        """Cancel a classification still pending (the turn ended or was cancelled)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None


# -- the generation pipeline ---------------------------------------------------------------------


class TextFilter(Protocol):
    """A streaming transform of the answer text (the sanitizer, strict JSON, edge trimming)."""

    def feed(self, text: str) -> str: ...

    def finish(self) -> str: ...


@dataclass(frozen=True)
class Piece(ThinkSplit):
    """What a flush hands a sink: reasoning, answer text, and the tool calls completed in it (only with
    a `tool_calls` parser; see `Generation`)."""

    tool_calls: tuple[ToolCall, ...] = ()


class Sink(Protocol):
    """Where a route turns pieces into its frames."""

    async def emit(self, piece: ThinkSplit) -> bool:
        """Send `piece` (reasoning and/or answer text) as the route's frames; False stops the generation
        (its engine request is aborted)."""
        ...


@dataclass
class Generation:
    """One engine request streamed to a route.

    Built with `for_prompt`, which works out `opens_thinking`: the prompt ends inside a think block (None:
    decide from the text at the end; False: text before `<think>` is the answer). `reasoning`: emit
    reasoning pieces (else they are dropped). `flush_s`: the coalescing interval (`STREAM_FLUSH_MS`, see
    `_flush`). After `run`: `content` (the answer before filters, as far as it was flushed to the sink),
    `token_ids` (likewise), `finish_reason`, `usage`, `first_token_at`, `stopped` (the sink or `observe`
    stopped it), and `failure`/`error` (an engine error, mapped and as raised). `observe` sees each raw
    delta first (the thinking passes watch token ids there); returning False stops the stream.

    Coalescing, the rule every route gets from here:
    - until the first visible piece (answer text, or reasoning when `reasoning`) has gone out, every delta is
      flushed as it arrives, so coalescing never delays the first frame;
    - after it, delta text accumulates and is flushed when a delta arrives `flush_s` or more after the last
      frame, and always before the stream ends (the route's terminal frame follows that flush); an engine
      error flushes what is pending before the failure is reported. `flush_s=0` flushes every delta;
    - an engine that stalls holds the pending text until its next delta or the end of its stream: no timer
      is armed per token or per frame (the engines' own `stream_interval` bounds how much they hold back);
    - cancellation (barge-in, `cancel`, a dropped client) and a stop by the sink or `observe` drop the
      pending text: it was never sent, so it is not in `content`, and history keeps what the client was sent.

    Tool calls: with a `tool_calls` parser (a route serving client tools), the answer is parsed at the
    flush, after the thinking split and before the filters: text that is not a call goes on as content,
    complete calls go to the sink in `Piece.tool_calls` (a call is held until complete, never shown as
    content), and a malformed call block goes on as content and is counted (`malformed_tool_call`).
    """

    engine: InferenceEngine
    request: ChatRequest
    telemetry: TurnTelemetry
    opens_thinking: bool | None = None
    reasoning: bool = False
    filters: Sequence[TextFilter] = ()
    flush_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    content_parts: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = "stop"
    usage: Usage | None = None
    first_token_at: float | None = None
    stopped: bool = False
    failure: Failure | None = None
    error: EngineError | None = None
    observe: OnDelta | None = None
    tool_calls: ToolCallParser | None = None
    calls: list[ToolCall] = field(default_factory=list)
    clock: Callable[[], float] = time.perf_counter  # the coalescing clock (tests inject their own)
    gate: QuotaGate | None = None  # the key's quota: admits (or refuses) the request before the engine sees it
    admission: Admission | None = None  # already admitted (HTTP admits before its response starts)

    @classmethod
    def for_prompt(
        cls,
        engine: InferenceEngine,
        request: ChatRequest,
        tokenizer: Any,
        telemetry: TurnTelemetry,
        *,
        streamed: bool = True,
        **options: Any,
    ) -> Generation:
        """THE way a route builds a generation: the thinking state is worked out from the prompt ids.

        A prompt that ends inside a think block (the template prefilled `<think>`) opens it. Otherwise a
        `streamed` reply decides eagerly (text before a `<think>` is the answer), while a whole reply can
        wait for the end, so a `</think>` with no opening tag still marks the reasoning before it.
        `tokenizer` None: the prompt is not inspected and text before `<think>` is the answer (the
        thinking-effort passes, which read raw deltas). `options`: the other fields (reasoning, filters, …).
        """
        opens = tokenizer is not None and prompt_ids_open_thinking(tokenizer, request.prompt_token_ids)
        opens_thinking: bool | None = True if opens else (False if streamed or tokenizer is None else None)
        return cls(engine, request, telemetry, opens_thinking=opens_thinking, **options)

    @property
    def content(self) -> str:
        return "".join(self.content_parts)

    async def run(self, sink: Sink) -> Generation:
        """Stream the reply into `sink`, coalesced as the class says. An engine error ends it with `failure`
        set (and reported); cancellation propagates (the engine request is aborted, pending text dropped)."""
        splitter = ThinkSplitter(starts_in_reasoning=self.opens_thinking)
        telemetry, interval, observe, clock = self.telemetry, self.flush_s, self.observe, self.clock
        pending: list[str] = []  # delta text since the last flush (not yet split, filtered or sent)
        pending_ids: list[int] = []
        last_frame = 0.0

        async def flush(final: bool) -> bool:
            nonlocal last_frame
            text = "".join(pending)
            pending.clear()
            split = splitter.feed(text) if text else ThinkSplit()
            if final:
                split = split + splitter.finish()
            if pending_ids:
                self.token_ids.extend(pending_ids)
                pending_ids.clear()
            sent = await self._flush(sink, split, final=final)
            if sent:
                last_frame = clock()
            return not self.stopped

        async def on_delta(delta: Delta) -> bool:
            telemetry.delta()
            if observe is not None and not await observe(delta):
                self.stopped = True
                return False
            if delta.text:
                pending.append(delta.text)
            if delta.token_ids:
                pending_ids.extend(delta.token_ids)
            if delta.finished:
                self.finish_reason, self.usage = delta.finish_reason, delta.usage
            if interval and self.first_token_at is not None and clock() - last_frame < interval:
                return True  # accumulate: the next delta past the interval, or the end, flushes it
            return await flush(final=False)

        if self.admission is None and self.gate is not None:
            sampling = self.request.sampling
            try:
                self.admission = await self.gate.admit(len(self.request.prompt_token_ids) + sampling.max_tokens)
            except QuotaExceededError as exc:  # refused: the engine never sees this request
                self.error, self.failure, self.finish_reason = exc, failure_for(exc), "error"
                return self
        telemetry.generation_started()
        try:
            try:
                await consume(self.engine, self.request, on_delta)
            except EngineError:
                if pending and not self.stopped:
                    await flush(final=False)  # what the engine said before failing still goes out
                raise
            if not self.stopped:
                await flush(final=True)
        except EngineError as exc:
            telemetry.report_exception(exc)
            self.error, self.failure = exc, failure_for(exc)
        finally:
            telemetry.generation_ended(self.usage)
            if self.admission is not None:
                await self.admission.settle(self.usage)
        return self

    async def _flush(self, sink: Sink, split: ThinkSplit, *, final: bool) -> bool:
        """THE token-to-frame point: the only place where generated text leaves for a route's frames.

        Called once per coalesced flush (see the class), so the filters run per flush, not per token.
        True when a piece went to the sink; a sink that says stop sets `stopped`."""
        content = split.content
        if content:
            self.content_parts.append(content)
        calls: tuple[ToolCall, ...] = ()
        if self.tool_calls is not None:
            parsed = self.tool_calls.feed(content)
            if final:
                parsed = parsed + self.tool_calls.finish()
            content, calls = parsed.content, parsed.calls
            self.calls.extend(calls)
            for _ in range(parsed.malformed):
                self.telemetry.telemetry.error("malformed_tool_call")
        for text_filter in self.filters:
            content = text_filter.feed(content) + (text_filter.finish() if final else "")
        reasoning = split.reasoning if self.reasoning else ""
        if not (content or reasoning or calls):
            return False
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.telemetry.first_token(self.first_token_at - self.started)
        if not await sink.emit(Piece(reasoning, content, calls)):
            self.stopped = True
        return True
