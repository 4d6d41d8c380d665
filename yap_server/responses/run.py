"""One `/v1/responses` response: the tool decision, the chat stream, and its events in OpenAI's order.

`response.created`, then for the reply `response.output_item.added`, `response.content_part.added`,
`response.output_text.delta`…, `response.output_text.done`, `response.content_part.done`,
`response.output_item.done` (or the same item events around `response.function_call_arguments.*`
for a tool call), then exactly one of `response.completed`, `response.incomplete`, `response.failed`.

A response is the connection's `Work`: it runs as a task of the runtime and sends its events
through the runtime's one bounded send path. Cancelling the task closes the engine stream (the
engine aborts the request); the runtime then calls `stopped`, which closes the open items and
sends `response.incomplete` with reason `cancelled` — unless a terminal event already went out (the
runtime's once-only guard, `terminal`).

The text streamed is the model's answer only (never `<think>` reasoning), without leading or
trailing whitespace, so `output` equals what was streamed and what a client stores for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from yap_engines import ChatRequest, EngineError, InferenceEngine, Sampling, StructuredOutput, Usage
from yap_engines.chat import FittedPrompt, stable_prefix
from yap_engines.protocol import SupportsPrefill
from yap_engines.thinking import ThinkSplit
from yap_engines.tool_calls import ToolCall, ToolCallParser

from ..connection import Terminal
from ..quotas import Admission, QuotaExceededError, QuotaGate
from ..streaming import Classifier, Failure, Generation, Piece, ToolVerdict, failure_for
from .conversation import EndedResponse, Item
from .events import (
    FunctionCallOutput,
    IncompleteDetails,
    MessageOutput,
    OutputText,
    ResponseError,
    ResponseObject,
    ResponseUsage,
    error_event,
)

if TYPE_CHECKING:
    from ..telemetry import TurnTelemetry

log = logging.getLogger("yap.responses")

Emit = Callable[[dict[str, Any]], Awaitable[None]]


class EdgeTrim:
    """Streams text without its leading whitespace and holds trailing whitespace until more text follows."""

    def __init__(self) -> None:
        self._started = False
        self._held = ""

    def feed(self, text: str) -> str:
        if not self._started:
            text = text.lstrip()
            if not text:
                return ""
            self._started = True
        body = text.rstrip()
        if not body:
            self._held += text
            return ""
        out = self._held + body
        self._held = text[len(body) :]
        return out

    def finish(self) -> str:
        """Trailing whitespace at the very end is never streamed."""
        return ""


@dataclass(frozen=True)
class ToolCheck:
    """Ask the classifier about `utterance` (with the earlier user turns) and call `name` on a yes."""

    classifier: Classifier
    name: str
    history: Sequence[str]
    utterance: str


@dataclass
class ResponseRun:
    """A single response on a connection."""

    response: ResponseObject
    conversation: list[Item]
    prompt: FittedPrompt | None  # None when the chat model is not deployed
    sampling: Sampling
    tool: ToolCheck | None
    send_event: Emit
    telemetry: TurnTelemetry
    terminal: Terminal = field(default_factory=Terminal)
    chat: InferenceEngine | None = None
    tokenizer: Any = None
    flush_s: float = 0.0  # the coalescing interval (`Generation.flush_s`)
    gate: QuotaGate | None = None  # the connection key's quota, checked before the classifier and the engine
    tool_calls: ToolCallParser | None = None  # the client's function tools: their calls parsed from the reply
    guided: StructuredOutput | None = None  # a forced call (`tool_choice` required or named)
    generate: bool = True  # False: a warm (`generate: false`), answered with no output
    _message: MessageOutput | None = field(default=None, repr=False)  # the open message, if any
    _verdict: ToolVerdict | None = field(default=None, repr=False)
    _generation: Generation | None = field(default=None, repr=False)

    @property
    def response_id(self) -> str:
        return self.response.id

    @property
    def engine_request_id(self) -> str:
        return f"yap-{self.response.id}"

    # -- events ----------------------------------------------------------------------------------
    async def _event(self, kind: str, **fields: Any) -> None:
        await self.send_event({"type": kind, **fields})

    def _snapshot(self) -> dict[str, Any]:
        return self.response.model_dump(mode="json")

    async def _open_message(self) -> MessageOutput:
        message = self._message = MessageOutput()
        self.response.output.append(message)
        index = len(self.response.output) - 1
        await self._event("response.output_item.added", output_index=index, item=message.model_dump(mode="json"))
        message.content.append(OutputText())
        await self._event(
            "response.content_part.added",
            item_id=message.id,
            output_index=index,
            content_index=0,
            part=message.content[0].model_dump(mode="json"),
        )
        return message

    async def _text(self, text: str) -> None:
        if not text:
            return
        message = self._message or await self._open_message()
        message.content[0].text += text
        index = len(self.response.output) - 1
        await self._event(
            "response.output_text.delta",
            item_id=message.id,
            output_index=index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    async def _close_message(self, status: str) -> None:
        message = self._message
        if message is None:
            return
        index = self.response.output.index(message)
        part = message.content[0]
        await self._event(
            "response.output_text.done",
            item_id=message.id,
            output_index=index,
            content_index=0,
            text=part.text,
            logprobs=[],
        )
        await self._event(
            "response.content_part.done",
            item_id=message.id,
            output_index=index,
            content_index=0,
            part=part.model_dump(mode="json"),
        )
        message.status = "completed" if status == "completed" else "incomplete"
        self._message = None
        await self._event("response.output_item.done", output_index=index, item=message.model_dump(mode="json"))

    async def _function_call(self, name: str, arguments: str = "{}", call_id: str | None = None) -> None:
        call = FunctionCallOutput(name=name) if call_id is None else FunctionCallOutput(name=name, call_id=call_id)
        self.response.output.append(call)
        index = len(self.response.output) - 1
        await self._event("response.output_item.added", output_index=index, item=call.model_dump(mode="json"))
        call.arguments = arguments
        await self._event(
            "response.function_call_arguments.delta", item_id=call.id, output_index=index, delta=arguments
        )
        await self._event(
            "response.function_call_arguments.done", item_id=call.id, output_index=index, name=name, arguments=arguments
        )
        call.status = "completed"
        await self._event("response.output_item.done", output_index=index, item=call.model_dump(mode="json"))

    async def _terminal(self, kind: str, status: str) -> None:
        if not self.terminal.claim():
            return
        self.telemetry.ended(status, self.response.error.code if self.response.error else None)
        await self._event(kind, response=self._snapshot())

    def _usage(self) -> ResponseUsage:
        """Usage counted here (the engine's own, from its finishing delta, is preferred when there is one)."""
        prompt_tokens = len(self.prompt.token_ids) if self.prompt is not None else 0
        return ResponseUsage.of(prompt_tokens, len(self._generation.token_ids) if self._generation else 0)

    # -- Work ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Emit `response.created`, decide on the tool, stream the reply; exactly one terminal event.

        The key's quota admits a generating response first: a refused one does no work (no classification)."""
        await self._event("response.created", response=self._snapshot())
        admission: Admission | None = None
        if self.generate and self.chat is not None and self.prompt is not None and self.gate is not None:
            try:
                admission = await self.gate.admit(len(self.prompt.token_ids) + self.sampling.max_tokens)
            except QuotaExceededError as exc:  # refused before the classifier and the engine saw it
                await self._refused(failure_for(exc))
                return
        if self.tool is not None:
            check = self.tool
            self._verdict = ToolVerdict(check.classifier, check.history, check.utterance, self.telemetry)
        try:
            if not self.generate:
                await self._warm()
                return
            if self.chat is None or self.prompt is None:
                if await self._decided_to_call():
                    await self._complete_with_call()
                else:
                    await self._complete("stop", None)
                return
            await self._chat(self.chat, self.prompt, admission)
        finally:
            if self._verdict is not None:
                self._verdict.drop()

    async def stopped(self, reason: str, notify: bool) -> bool:
        """After the task was cancelled: close open items and send `response.incomplete` (reason
        `cancelled`); False when the response had already ended."""
        if self.terminal.sent:
            return False
        await self._close_message("incomplete")
        self.response.status = "incomplete"
        self.response.incomplete_details = IncompleteDetails(reason="cancelled")
        self.response.usage = self._usage()
        await self._terminal("response.incomplete", "cancelled")
        return True

    async def crashed(self, exc: Exception) -> None:
        """Its task failed unexpectedly: `response.failed` (unless a terminal event already went out)."""
        log.error("response %s failed: %r", self.response_id, exc)
        self.telemetry.report_exception(exc)
        if not self.terminal.sent:
            await self._fail("server_error", "the server failed on this response; it has been logged")

    async def _decided_to_call(self) -> bool:
        """Wait for the pending classification (once); True when the declared tool should be called."""
        verdict = self._verdict
        if verdict is None or not verdict.pending:
            return False
        return (await verdict.result()).status == "yes"

    async def _refused(self, failure: Failure) -> None:
        """The key's quota refused the response: OpenAI's `rate_limit_exceeded` error event, then `response.failed`."""
        event = error_event(failure.openai_code, failure.message)
        event["error"]["type"] = failure.openai_type
        await self.send_event({**event, **failure.extra})
        await self._fail(failure.openai_code, failure.message)

    async def _chat(self, chat: InferenceEngine, fitted: FittedPrompt, admission: Admission | None) -> None:
        """Stream the reply (`admission`: what the key's quota admitted it with). The tool decision is awaited
        before the first visible text: on a yes the stream is left (the engine aborts the request) and the
        response is the call alone."""
        prompt = fitted.token_ids
        request = ChatRequest(
            self.engine_request_id,
            prompt,
            self.sampling,
            structured_output=self.guided,
            session_id=self.response.id,
            messages=fitted.messages,
        )
        generation = Generation.for_prompt(
            chat,
            request,
            self.tokenizer,
            self.telemetry,
            filters=[EdgeTrim()],
            flush_s=self.flush_s,
            admission=admission,
            tool_calls=self.tool_calls,
        )
        self._generation = generation
        await generation.run(self)
        if generation.failure is not None:
            failure = generation.failure
            code = "server_error" if failure.status >= 500 else failure.openai_code
            await self._fail(code, f"the engine failed mid-response: {failure.message}")
            return
        if generation.stopped or await self._decided_to_call():  # still pending only when nothing was said
            await self._complete_with_call()
        elif generation.calls:
            await self._complete_with_model_calls(generation.usage)
        else:
            await self._complete(generation.finish_reason or "stop", generation.usage)

    async def _warm(self) -> None:
        """`generate: false`: compute the conversation, up to where the next user message will start, into the
        prefix cache (OpenAI's "prepare state"); then `response.completed` with no output and 0 output tokens.
        Its id chains with `previous_response_id` like any response's."""
        assert isinstance(self.chat, SupportsPrefill) and self.prompt is not None
        ids = stable_prefix(self.tokenizer, self.prompt.messages, "user", "")
        request = ChatRequest(self.engine_request_id, ids, session_id=self.response.id, messages=self.prompt.messages)
        telemetry = self.telemetry.connection.telemetry
        telemetry.warm_started("responses")
        try:
            result = await self.chat.prefill(request)
        except asyncio.CancelledError:
            telemetry.warm_ended("responses", "cancelled")
            raise
        except EngineError as exc:
            telemetry.warm_ended("responses", "error")
            failure = failure_for(exc)
            await self._fail("server_error" if failure.status >= 500 else failure.openai_code, failure.message)
            return
        telemetry.warm_ended("responses", "completed", result.prompt_tokens)
        self.response.status = "completed"
        self.response.usage = ResponseUsage.of(result.prompt_tokens, 0, result.cached_tokens)
        await self._terminal("response.completed", "done")

    async def emit(self, piece: ThinkSplit) -> bool:
        """The answer text as `response.output_text.delta` events, the model's calls as `function_call`
        items; False (the classifier's tool call) stops the stream."""
        if await self._decided_to_call():
            return False
        await self._text(piece.content)
        for call in piece.tool_calls if isinstance(piece, Piece) else ():
            await self._model_call(call)
        return True

    async def _model_call(self, call: ToolCall) -> None:
        """A call of one of the client's functions: the open message (text before it) closes first."""
        await self._close_message("completed")
        await self._function_call(call.name, call.arguments, call.id)

    async def _complete_with_model_calls(self, usage: Usage | None) -> None:
        self.response.status = "completed"
        if usage is not None:
            self.response.usage = ResponseUsage.of(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
        else:
            self.response.usage = self._usage()
        await self._terminal("response.completed", "done")

    async def _complete_with_call(self) -> None:
        assert self.tool is not None
        await self._function_call(self.tool.name)
        self.response.status = "completed"
        self.response.usage = self._usage()
        await self._terminal("response.completed", "done")

    async def _complete(self, finish: str, usage: Usage | None) -> None:
        """End with the reply: `response.completed`, or `response.incomplete` at the token cap."""
        if self._message is None:
            await self._open_message()  # an empty reply is still one (empty) message
        status: Literal["completed", "incomplete"] = "incomplete" if finish == "length" else "completed"
        await self._close_message(status)
        self.response.status = status
        if usage is not None:
            self.response.usage = ResponseUsage.of(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
        else:
            self.response.usage = self._usage()
        if status == "incomplete":
            self.response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
            await self._terminal("response.incomplete", "done")
        else:
            await self._terminal("response.completed", "done")

    async def _fail(self, code: str, message: str) -> None:
        await self._close_message("incomplete")
        self.response.status = "failed"
        self.response.error = ResponseError(code=code, message=message)
        self.response.usage = self._usage()
        await self._terminal("response.failed", "error")

    def ended(self) -> EndedResponse:
        cut = self.response.status != "completed"
        return EndedResponse.of(self.response.id, self.conversation, self.response.output, cut)
