"""`POST /v1/chat/completions` and `GET /v1/models`: OpenAI's wire format over the deployed chat engine.

The prompt is rendered once with the model's chat template; the reply streams through the server's
generation pipeline (`streaming.Generation`) as `chat.completion.chunk` server-sent events (a role
chunk, content/`reasoning_content` deltas, a chunk with `finish_reason`, a usage chunk when
`stream_options.include_usage` is set, then `[DONE]`) or comes back as one `chat.completion`. A
`<think>` block in the reply goes to `reasoning_content` (SGLang's and TensorRT-LLM's field name),
never into `content`. The first delta is awaited before answering, so a request the engine refuses
gets a status code; an engine failure after the stream started arrives as a `data: {"error": ...}`
event, which the `openai` SDK raises. A client that disconnects aborts the engine request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from yap_engines import ChatRequest, Delta
from yap_engines.chat import render_ids
from yap_engines.function_tools import tool_messages
from yap_engines.thinking import ThinkSplit
from yap_engines.tool_calls import ToolCall, ToolCallParser, detect_parser, template_renders_tools

from ..auth import WHERE_KEYS_GO, authenticate
from ..frames import encode_json
from ..keys import ApiKey
from ..quotas import Admission, QuotaExceededError
from ..streaming import Failure, Generation, Piece, failure_for
from .request import ChatCall, OpenAIError, parse_chat_body, parse_completion_body
from .strict_json import StrictJsonStream

if TYPE_CHECKING:
    from ..state import AppState
    from ..telemetry import ConnectionTelemetry

SESSION_HEADER = "x-session-id"  # routing adapters send it so that a session stays on one replica
_FINISH = {"stop": "stop", "length": "length", "cancelled": "abort", "error": "error"}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _check_key(request: Request) -> ApiKey:
    app: AppState = request.state.app
    key = authenticate(request)
    if key is None:
        app.telemetry.rejected("auth")
        message = f"missing or wrong API key: {WHERE_KEYS_GO}"
        raise OpenAIError(401, message, code="invalid_api_key", type="authentication_error")
    return key


async def list_models(request: Request) -> JSONResponse:
    """`GET /v1/models` (API key required)."""
    try:
        _check_key(request)
    except OpenAIError as exc:
        return exc.response()
    app: AppState = request.state.app
    # Beside OpenAI's fields, the limits a client needs to size a request (vLLM publishes max_model_len too).
    limits = {"max_model_len": app.chat.max_model_len if app.chat is not None else None}
    limits["max_completion_tokens"] = app.sampling.max_tokens_limit
    data = [{"id": model, "object": "model", "created": 0, "owned_by": "yap", **limits} for model in app.served_models]
    return JSONResponse({"object": "list", "data": data})


async def chat_completions(request: Request) -> Response:
    """`POST /v1/chat/completions` (API key required): streaming (SSE) or one JSON object."""
    return await _answer(request, text=False)


async def completions(request: Request) -> Response:
    """`POST /v1/completions` with a raw token prompt (API key required): `text_completion` objects."""
    return await _answer(request, text=True)


async def _answer(request: Request, *, text: bool) -> Response:
    app: AppState = request.state.app
    try:
        completion = await _prepare(request, text=text)
    except OpenAIError as exc:
        if exc.status != 401:
            app.telemetry.error(exc.code)
        return exc.response()
    return CompletionResponse(completion)


async def _prepare(request: Request, *, text: bool = False) -> Completion:
    """Authenticate, validate, render and admit (the key's quota): everything that can fail before the engine runs.
    `text`: `POST /v1/completions` with a raw token prompt."""
    key = _check_key(request)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OpenAIError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise OpenAIError(400, "the request body is nested too deeply: flatten it", code="invalid_json") from None
    app: AppState = request.state.app
    settings = app.settings
    call = (parse_completion_body if text else parse_chat_body)(body, app.sampling)
    app.note_ignored(call.ignored)
    if app.chat is None:
        raise OpenAIError(
            503,
            f"this server does not deploy a chat model (DEPLOY_MODE={settings.deploy_mode}); "
            "serve one with DEPLOY_MODE=chat or both",
            code="not_deployed",
            type="server_error",
        )
    models = app.served_models
    if call.model not in models:
        message = f"the model {call.model!r} is not served here; use one of: {', '.join(models)} (see GET /v1/models)"
        raise OpenAIError(404, message, code="model_not_found", param="model")
    messages, template_kwargs, structured = call.messages, call.template_kwargs, call.structured_output
    parser: ToolCallParser | None = None
    tools = call.tools
    if (tools is not None and tools.active) or any(m["role"] == "tool" or m.get("tool_calls") for m in messages):
        rendered = tool_messages(messages, tools, native=template_renders_tools(app.tokenizer))
        messages, template_kwargs = rendered.messages, {**rendered.template_kwargs, **template_kwargs}
    if tools is not None and tools.active:
        fmt = settings.tool_call_parser
        parser = tools.parser(detect_parser(app.tokenizer) if fmt == "auto" else fmt, app.tokenizer)
        structured = tools.guided() or structured
    try:
        prompt = list(call.prompt_ids) if call.prompt_ids is not None else []
        prompt = prompt or render_ids(app.tokenizer, messages, **template_kwargs)
    except Exception as exc:  # the model's own Jinja template refused these messages
        raise OpenAIError(
            400, f"the model's chat template rejected the messages: {exc}", code="invalid_value", param="messages"
        ) from None
    if len(prompt) > app.chat_max_len:
        message = (
            f"the prompt is {len(prompt)} tokens, over this server's prompt budget of {app.chat_max_len} "
            "(CHAT_MAX_LEN); send fewer or shorter messages"
        )
        raise OpenAIError(400, message, code="context_length_exceeded", param="messages")
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    engine_request = ChatRequest(
        request_id,
        prompt,
        call.sampling,
        structured_output=structured,
        session_id=request.headers.get(SESSION_HEADER),
        messages=messages,
    )
    try:
        admission = await app.quotas.admit(key, len(prompt) + call.sampling.max_tokens)
    except QuotaExceededError as exc:
        raise openai_error(failure_for(exc)) from None
    return Completion(call, app, engine_request, admission, parser)


def openai_error(failure: Failure) -> OpenAIError:
    """The OpenAI error for an engine failure."""
    param = "messages" if failure.openai_code == "context_length_exceeded" else None
    return OpenAIError(
        failure.status,
        failure.message,
        code=failure.openai_code,
        param=param,
        type=failure.openai_type,
        headers=failure.headers,
    )


class Completion:
    """One completion: its generation, its OpenAI objects and its telemetry."""

    def __init__(
        self,
        call: ChatCall,
        app: AppState,
        request: ChatRequest,
        admission: Admission,
        tool_calls: ToolCallParser | None = None,
    ) -> None:
        self.call = call
        self.id = request.request_id
        self.created = int(time.time())
        self._connection: ConnectionTelemetry = app.telemetry.connection_opened("openai")
        self.telemetry = self._connection.turn(self.id)
        kind = call.structured_output.kind if call.structured_output else None
        assert app.chat is not None
        self.generation = Generation.for_prompt(
            app.chat,
            request,
            app.tokenizer if call.prompt_ids is None else None,  # a raw token prompt's reply is plain text
            self.telemetry,
            streamed=call.stream,
            reasoning=call.include_reasoning,
            filters=[StrictJsonStream()] if kind in ("json_schema", "json_object") and tool_calls is None else (),
            flush_s=app.stream_flush_s,
            admission=admission,
            tool_calls=tool_calls,
        )
        self.headers = admission.headers  # the key's rate-limit headers, on every answer
        self._sent_ids = 0  # how many generated ids a chunk has carried
        self._ended = False

    @property
    def finish_reason(self) -> str:
        if self.generation.calls:
            return "tool_calls"
        return _FINISH.get(str(self.generation.finish_reason), "stop")

    def usage_dict(self) -> dict[str, Any]:
        usage = self.generation.usage
        prompt, completion, cached = (
            (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) if usage else (0, 0, 0)
        )
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    @property
    def text_completion(self) -> bool:
        """A raw token prompt (`/v1/completions`): `text` fields, not chat `delta`/`message` objects."""
        return self.call.prompt_ids is not None

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        if self.text_completion:
            text = str(delta.get("reasoning_content", "")) + str(delta.get("content", ""))
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        if self.call.return_token_ids:  # vLLM's extension: the ids generated since the previous chunk
            ids = self.generation.token_ids
            choice["token_ids"] = ids[self._sent_ids :]
            self._sent_ids = len(ids)
        body: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion" if self.text_completion else "chat.completion.chunk",
            "created": self.created,
            "model": self.call.model,
            "choices": [choice],
        }
        if self.call.include_usage:
            body["usage"] = None
        return _event(body)

    def usage_chunk(self) -> bytes:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.call.model}
        return _event({**body, "choices": [], "usage": self.usage_dict()})

    def whole(self, reasoning: str, content: str) -> dict[str, Any]:
        """The whole `chat.completion` object."""
        calls = self.generation.calls
        message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
        if reasoning:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = [call.as_openai() for call in calls]
        choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}
        if self.text_completion:
            choice = {"index": 0, "text": reasoning + content, "logprobs": None, "finish_reason": self.finish_reason}
        if self.call.return_token_ids:
            choice["token_ids"] = self.generation.token_ids
        return {
            "id": self.id,
            "object": "text_completion" if self.text_completion else "chat.completion",
            "created": self.created,
            "model": self.call.model,
            "choices": [choice],
            "usage": self.usage_dict(),
        }

    def ended(self, status: str, code: str | None = None) -> None:
        """Close the telemetry once: request status, connection."""
        if not self._ended:
            self._ended = True
            self.telemetry.ended(status, code)
            self._connection.closed()


class _Collect:
    """The non-streaming sink: pieces add up to the whole reply (joined once, at the end)."""

    def __init__(self) -> None:
        self.reasoning: list[str] = []
        self.content: list[str] = []

    async def emit(self, piece: ThinkSplit) -> bool:
        self.reasoning.append(piece.reasoning)
        self.content.append(piece.content)
        return True


class _Events:
    """The streaming sink: each piece is one `chat.completion.chunk` event."""

    def __init__(self, completion: Completion, send: Send) -> None:
        self.completion = completion
        self._send = send
        self.started = False
        self.calls = 0  # tool calls streamed so far (the next one's index)

    async def start(self, _delta: Delta | None = None) -> bool:
        """Answer 200 and send the role chunk (at the first delta, or at the end of an empty stream)."""
        if not self.started:
            self.started = True
            headers = [(k.lower().encode(), v.encode()) for k, v in SSE_HEADERS.items()]
            headers.append((b"content-type", b"text/event-stream; charset=utf-8"))
            headers += [(k.lower().encode(), v.encode()) for k, v in self.completion.headers.items()]
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})
            await self.body(self.completion.chunk({"role": "assistant", "content": ""}))
        return True

    async def body(self, data: bytes, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def emit(self, piece: ThinkSplit) -> bool:
        fields = {}
        if piece.reasoning:
            fields["reasoning_content"] = piece.reasoning
        if piece.content:
            fields["content"] = piece.content
        if fields:
            await self.body(self.completion.chunk(fields))
        for call in piece.tool_calls if isinstance(piece, Piece) else ():
            await self.tool_call(call)
        return True

    async def tool_call(self, call: ToolCall) -> None:
        """A complete call as OpenAI streams one: its index, id and name, then its arguments."""
        index, self.calls = self.calls, self.calls + 1
        head = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        await self.body(self.completion.chunk({"tool_calls": [head]}))
        arguments = {"index": index, "function": {"arguments": call.arguments}}
        await self.body(self.completion.chunk({"tool_calls": [arguments]}))


class CompletionResponse(Response):
    """Runs the completion when Starlette sends the response: as SSE events, or as one JSON object.
    However it ends (finished, failed, client gone), the engine stream is closed."""

    def __init__(self, completion: Completion) -> None:
        self.completion = completion
        self.background = None
        self._events: _Events | None = None
        self._receive: Receive | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        completion = self.completion
        self._receive = receive
        try:
            if completion.call.stream:
                finished = await _unless_disconnected(receive, self._stream(send))
            else:
                finished = await _unless_disconnected(receive, self._whole(send))
            if not finished and (self._events is None or not self._events.started):
                with contextlib.suppress(OSError, RuntimeError):  # nobody reads it; the engine request is aborted
                    await Response(status_code=499)(scope, receive, send)
        finally:
            completion.ended("cancelled")  # a no-op when it already ended
            if (admission := completion.generation.admission) is not None:
                await admission.settle(None)  # a no-op when the generation settled it; else its reservation returns

    async def _whole(self, send: Send) -> None:
        completion, sink = self.completion, _Collect()
        generation = await completion.generation.run(sink)
        response: Response
        if generation.failure is not None:
            error = openai_error(generation.failure)
            completion.ended("error", error.code)
            response = error.response()
        else:
            completion.ended("done")
            response = JSONResponse(
                completion.whole("".join(sink.reasoning), "".join(sink.content)), headers=completion.headers
            )
        assert self._receive is not None
        await response({"type": "http"}, self._receive, send)

    async def _stream(self, send: Send) -> None:
        completion = self.completion
        events = self._events = _Events(completion, send)
        generation = completion.generation
        generation.observe = events.start
        await generation.run(events)
        if generation.failure is not None:
            error = openai_error(generation.failure)
            completion.ended("error", error.code)
            if not events.started:
                assert self._receive is not None
                await error.response()({"type": "http"}, self._receive, send)
                return
            await events.body(_event(error.body()))
        else:
            await events.start()
            await events.body(completion.chunk({}, completion.finish_reason))
            if completion.call.include_usage:
                await events.body(completion.usage_chunk())
            completion.ended("done")
        await events.body(b"data: [DONE]\n\n", more=False)


def _event(body: Mapping[str, Any]) -> bytes:
    return f"data: {encode_json(body)}\n\n".encode()


async def _unless_disconnected(receive: Receive, work: Awaitable[None]) -> bool:
    """Run `work` unless the client disconnects first; then cancel it (closing the engine stream aborts
    the engine request). True when the work finished."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return False
    task.result()
    return True
