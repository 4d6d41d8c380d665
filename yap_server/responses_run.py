"""One `/v1/responses` response: the tool decision, the chat stream, and its events in OpenAI's order.

`response.created`, then for the reply `response.output_item.added`, `response.content_part.added`,
`response.output_text.delta`…, `response.output_text.done`, `response.content_part.done`,
`response.output_item.done` (or the same item events around `response.function_call_arguments.*`
for a tool call), then exactly one of `response.completed`, `response.incomplete`, `response.failed`.

A response runs as its own task and emits events synchronously into the connection's outbox, so a
cancel never lands halfway through a send. Cancelling the task closes the engine stream (the engine
aborts the request); the connection then calls `finish_cancelled`, which closes the open items and
sends `response.incomplete` with reason `cancelled` — unless a terminal event already went out.

The text streamed is the model's answer only (never `<think>` reasoning), without leading or
trailing whitespace, so `output` equals what was streamed and what a client stores for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from yap_engines import ChatRequest, EngineError, InferenceEngine, InvalidRequestError, Sampling, Usage
from yap_engines.chat import FittedPrompt
from yap_engines.thinking import ThinkSplitter, prompt_ids_open_thinking
from yap_engines.tool import ToolClassifier, ToolDecision

from .responses_conversation import EndedResponse, Item
from .responses_events import (
    FunctionCallOutput,
    IncompleteDetails,
    MessageOutput,
    OutputText,
    ResponseError,
    ResponseObject,
    ResponseUsage,
)

if TYPE_CHECKING:
    from .observability import TurnTelemetry

Emit = Callable[[dict[str, Any]], None]


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


@dataclass(frozen=True)
class ToolCheck:
    """Ask the classifier about `utterance` (with the earlier user turns) and call `name` on a yes."""

    classifier: ToolClassifier
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
    emit: Emit
    telemetry: TurnTelemetry
    terminal_sent: bool = False
    engine_request_id: str = ""
    _message: MessageOutput | None = field(default=None, repr=False)  # the open message, if any
    _tool_task: asyncio.Task[ToolDecision] | None = field(default=None, repr=False)
    _output_tokens: int = 0

    def __post_init__(self) -> None:
        self.engine_request_id = f"yap-{self.response.id}"

    @property
    def response_id(self) -> str:
        return self.response.id

    # -- events ----------------------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> None:
        self.emit({"type": kind, **fields})

    def _snapshot(self) -> dict[str, Any]:
        return self.response.model_dump(mode="json")

    def _open_message(self) -> MessageOutput:
        message = self._message = MessageOutput()
        self.response.output.append(message)
        index = len(self.response.output) - 1
        self._event("response.output_item.added", output_index=index, item=message.model_dump(mode="json"))
        message.content.append(OutputText())
        self._event(
            "response.content_part.added",
            item_id=message.id,
            output_index=index,
            content_index=0,
            part=message.content[0].model_dump(mode="json"),
        )
        return message

    def _text(self, text: str) -> None:
        if not text:
            return
        message = self._message or self._open_message()
        message.content[0].text += text
        index = len(self.response.output) - 1
        self._event(
            "response.output_text.delta",
            item_id=message.id,
            output_index=index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _close_message(self, status: str) -> None:
        message = self._message
        if message is None:
            return
        index = self.response.output.index(message)
        part = message.content[0]
        self._event(
            "response.output_text.done",
            item_id=message.id,
            output_index=index,
            content_index=0,
            text=part.text,
            logprobs=[],
        )
        self._event(
            "response.content_part.done",
            item_id=message.id,
            output_index=index,
            content_index=0,
            part=part.model_dump(mode="json"),
        )
        message.status = "completed" if status == "completed" else "incomplete"
        self._message = None
        self._event("response.output_item.done", output_index=index, item=message.model_dump(mode="json"))

    def _function_call(self, name: str) -> None:
        call = FunctionCallOutput(name=name)
        self.response.output.append(call)
        index = len(self.response.output) - 1
        self._event("response.output_item.added", output_index=index, item=call.model_dump(mode="json"))
        call.arguments = "{}"
        self._event("response.function_call_arguments.delta", item_id=call.id, output_index=index, delta="{}")
        self._event(
            "response.function_call_arguments.done", item_id=call.id, output_index=index, name=name, arguments="{}"
        )
        call.status = "completed"
        self._event("response.output_item.done", output_index=index, item=call.model_dump(mode="json"))

    def _terminal(self, kind: str, status: str) -> None:
        self.terminal_sent = True
        self.telemetry.ended(status, self.response.error.code if self.response.error else None)
        self._event(kind, response=self._snapshot())

    def _usage(self) -> ResponseUsage:
        """Usage counted here (the engine's own, from its finishing delta, is preferred when there is one)."""
        prompt_tokens = len(self.prompt.token_ids) if self.prompt is not None else 0
        return ResponseUsage.of(prompt_tokens, self._output_tokens)

    # -- the run ---------------------------------------------------------------------------------
    async def run(self, chat: InferenceEngine | None, tokenizer: Any) -> None:
        """Emit `response.created`, decide on the tool, stream the reply; exactly one terminal event."""
        self._event("response.created", response=self._snapshot())
        if self.tool is not None:
            check = self.tool
            self._tool_task = asyncio.create_task(check.classifier.classify(check.history, check.utterance))
        try:
            if chat is None or self.prompt is None:
                if await self._decided_to_call():
                    self._complete_with_call()
                else:
                    self._complete("stop", None)
                return
            await self._chat(chat, tokenizer, self.prompt)
        finally:
            if self._tool_task is not None:
                self._tool_task.cancel()

    async def _decided_to_call(self) -> bool:
        """Wait for the pending classification (once); True when the declared tool should be called."""
        task, self._tool_task = self._tool_task, None
        if task is None:
            return False
        decision = await task
        self.telemetry.tool_classified(decision.status, decision.latency_ms / 1000)
        return decision.status == "yes"

    async def _chat(self, chat: InferenceEngine, tokenizer: Any, fitted: FittedPrompt) -> None:
        """Stream the reply. The tool decision is awaited before the first visible text: on a yes the
        stream is left (the engine aborts the request) and the response is the call alone."""
        prompt = fitted.token_ids
        request = ChatRequest(
            self.engine_request_id, prompt, self.sampling, session_id=self.response.id, messages=fitted.messages
        )
        splitter = ThinkSplitter(starts_in_reasoning=prompt_ids_open_thinking(tokenizer, prompt))
        trim = EdgeTrim()
        telemetry = self.telemetry
        started = time.perf_counter()
        finish, usage, called = "stop", None, False
        telemetry.generation_started()
        try:
            async with contextlib.aclosing(chat.generate(request)) as stream:
                async for delta in stream:
                    telemetry.delta()
                    self._output_tokens += len(delta.token_ids)
                    if delta.finished:
                        finish, usage = delta.finish_reason or "stop", delta.usage
                    text = trim.feed(splitter.feed(delta.text).content)
                    if text and await self._decided_to_call():
                        called = True
                        break  # leaving the block closes the stream: the engine aborts the request
                    if text and self._message is None:
                        telemetry.first_token(time.perf_counter() - started)
                    self._text(text)
            if not called:
                tail = trim.feed(splitter.finish().content)
                called = await self._decided_to_call()  # still pending only when nothing was said
                if not called:
                    self._text(tail)
        except (EngineError, InvalidRequestError) as exc:
            telemetry.report_exception(exc)
            self._fail("server_error", f"the engine failed mid-response: {exc}")
            return
        finally:
            telemetry.generation_ended(usage)
        if called:
            self._complete_with_call()
        else:
            self._complete(finish, usage)

    def _complete_with_call(self) -> None:
        assert self.tool is not None
        self._function_call(self.tool.name)
        self.response.status = "completed"
        self.response.usage = self._usage()
        self._terminal("response.completed", "done")

    def _complete(self, finish: str, usage: Usage | None) -> None:
        """End with the reply: `response.completed`, or `response.incomplete` at the token cap."""
        if self._message is None:
            self._open_message()  # an empty reply is still one (empty) message
        status: Literal["completed", "incomplete"] = "incomplete" if finish == "length" else "completed"
        self._close_message(status)
        self.response.status = status
        if usage is not None:
            self.response.usage = ResponseUsage.of(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
        else:
            self.response.usage = self._usage()
        if status == "incomplete":
            self.response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
            self._terminal("response.incomplete", "done")
        else:
            self._terminal("response.completed", "done")

    def _fail(self, code: str, message: str) -> None:
        self._close_message("incomplete")
        self.response.status = "failed"
        self.response.error = ResponseError(code=code, message=message)
        self.response.usage = self._usage()
        self._terminal("response.failed", "error")

    # -- endings driven by the connection --------------------------------------------------------
    def finish_cancelled(self) -> bool:
        """After the task was cancelled: close open items and send `response.incomplete` (reason
        `cancelled`); False when the response had already ended."""
        if self.terminal_sent:
            return False
        self._close_message("incomplete")
        self.response.status = "incomplete"
        self.response.incomplete_details = IncompleteDetails(reason="cancelled")
        self.response.usage = self._usage()
        self._terminal("response.incomplete", "cancelled")
        return True

    def finish_failed(self, code: str, message: str) -> None:
        """After the task failed unexpectedly: `response.failed` (unless a terminal event already went out)."""
        if not self.terminal_sent:
            self._fail(code, message)

    def ended(self) -> EndedResponse:
        cut = self.response.status != "completed"
        return EndedResponse.of(self.response.id, self.conversation, self.response.output, cut)
