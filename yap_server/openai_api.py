"""`POST /v1/chat/completions` and `GET /v1/models`: OpenAI's wire format over the deployed chat engine.

The prompt is rendered once with the model's chat template; replies stream as `chat.completion.chunk`
server-sent events (a role chunk, content/`reasoning_content` deltas, a chunk with `finish_reason`,
a usage chunk when `stream_options.include_usage` is set, then `[DONE]`) or come back as one
`chat.completion`. A `<think>` block in the reply goes to `reasoning_content` (SGLang's and
TensorRT-LLM's field name), never into `content`. Errors use OpenAI's error shape; an engine failure
after the stream started arrives as a `data: {"error": ...}` event, which the `openai` SDK raises.
A client that disconnects aborts the engine request, streaming or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from yap_engines import (
    ChatRequest,
    ContextTooLongError,
    Delta,
    EngineDeadError,
    EngineError,
    InvalidRequestError,
    UnsupportedFeature,
    Usage,
)
from yap_engines.chat import render_ids
from yap_engines.thinking import ThinkSplit, ThinkSplitter, prompt_ids_open_thinking

from .auth import WHERE_KEYS_GO, key_is_valid, presented_key
from .observability import Telemetry, TurnTelemetry
from .openai_json import StrictJsonStream
from .openai_request import ChatCall, OpenAIError, parse_chat_body
from .settings import ServerSettings
from .wire import encode_json

SESSION_HEADER = "x-session-id"  # routing adapters send it so that a session stays on one replica
_FINISH = {"stop": "stop", "length": "length", "cancelled": "abort", "error": "error"}
_T = TypeVar("_T")
# One encoder for every event: `json.dumps` with non-default options builds a new encoder per call.


def served_models(request: Request) -> list[str]:
    """The model ids this server answers to: `SERVED_MODEL_NAME` when set, else the chat engine's model id."""
    settings: ServerSettings = request.state.settings
    chat = request.state.engines.get("chat")
    if chat is None:
        return []
    if settings.served_model_name:
        return [name.strip() for name in settings.served_model_name.split(",") if name.strip()]
    return [str(getattr(chat, "model_id", None) or chat.name)]


def _check_key(request: Request) -> None:
    settings: ServerSettings = request.state.settings
    if not key_is_valid(presented_key(request), settings.api_keys):
        request.state.telemetry.rejected("auth")
        message = f"missing or wrong API key: {WHERE_KEYS_GO}"
        raise OpenAIError(401, message, code="invalid_api_key", type="authentication_error")


async def list_models(request: Request) -> JSONResponse:
    """`GET /v1/models` (API key required)."""
    try:
        _check_key(request)
    except OpenAIError as exc:
        return exc.response()
    data = [{"id": model, "object": "model", "created": 0, "owned_by": "yap"} for model in served_models(request)]
    return JSONResponse({"object": "list", "data": data})


async def chat_completions(request: Request) -> Response:
    """`POST /v1/chat/completions` (API key required): streaming (SSE) or one JSON object."""
    try:
        completion, engine_request = await _prepare(request)
    except OpenAIError as exc:
        if exc.status != 401:
            request.state.telemetry.error(exc.code)
        return exc.response()
    stream = request.state.engines["chat"].generate(engine_request)
    streaming = False
    try:
        # The first delta is awaited before answering, so a request the engine refuses gets a status code.
        first = await _unless_disconnected(request, anext(stream, None))
        if isinstance(first, _Disconnected):
            return Response(status_code=499)  # nobody reads it; the engine request is aborted
        if completion.call.stream:
            streaming = True  # from here the response owns the engine stream
            return _EngineStreamResponse(completion.sse(first, stream), stream, completion)
        result = await _unless_disconnected(request, completion.collect(first, stream))
        if isinstance(result, _Disconnected):
            return Response(status_code=499)
        completion.ended("done")
        return JSONResponse(result)
    except EngineError as exc:
        return completion.failed(exc).response()
    finally:
        if not streaming:
            await stream.aclose()
            completion.ended("cancelled")  # a no-op when it already ended


async def _prepare(request: Request) -> tuple[Completion, ChatRequest]:
    """Authenticate, validate and render: everything that can fail before the engine runs."""
    _check_key(request)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OpenAIError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise OpenAIError(400, "the request body is nested too deeply: flatten it", code="invalid_json") from None
    settings: ServerSettings = request.state.settings
    call = parse_chat_body(body, request.state.base_sampling)
    chat = request.state.engines.get("chat")
    if chat is None:
        raise OpenAIError(
            503,
            f"this server does not deploy a chat model (DEPLOY_MODE={settings.deploy_mode}); "
            "serve one with DEPLOY_MODE=chat or both",
            code="not_deployed",
            type="server_error",
        )
    models = served_models(request)
    if call.model not in models:
        message = f"the model {call.model!r} is not served here; use one of: {', '.join(models)} (see GET /v1/models)"
        raise OpenAIError(404, message, code="model_not_found", param="model")
    tokenizer = request.state.chat_tokenizer
    try:
        prompt = render_ids(tokenizer, call.messages, **call.template_kwargs)
    except Exception as exc:  # the model's own Jinja template refused these messages
        raise OpenAIError(
            400, f"the model's chat template rejected the messages: {exc}", code="invalid_value", param="messages"
        ) from None
    if len(prompt) > settings.chat_max_len:
        message = (
            f"the prompt is {len(prompt)} tokens, over this server's prompt budget of {settings.chat_max_len} "
            "(CHAT_MAX_LEN); send fewer or shorter messages"
        )
        raise OpenAIError(400, message, code="context_length_exceeded", param="messages")
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    engine_request = ChatRequest(
        request_id,
        prompt,
        call.sampling,
        structured_output=call.structured_output,
        session_id=request.headers.get(SESSION_HEADER),
        messages=call.messages,
    )
    opens = prompt_ids_open_thinking(tokenizer, prompt)
    return Completion(call, request_id, request.state.telemetry, opens), engine_request


class Completion:
    """One completion's state: the thinking split, strict JSON, finish reason, usage and telemetry."""

    def __init__(self, call: ChatCall, request_id: str, telemetry: Telemetry, opens_thinking: bool) -> None:
        self.call = call
        self.id = request_id
        self.created = int(time.time())
        # Streaming decides eagerly (text before a `<think>` is the answer); a whole reply can wait for
        # the end, so a `</think>` with no opening tag still marks the reasoning before it.
        exact = False if call.stream else None
        self.splitter = ThinkSplitter(starts_in_reasoning=True if opens_thinking else exact)
        kind = call.structured_output.kind if call.structured_output else None
        self.json = StrictJsonStream() if kind in ("json_schema", "json_object") else None
        self.finish_reason = "stop"
        self.usage: Usage | None = None
        self.token_ids: list[int] = []  # all generated ids (`return_token_ids`)
        self._unsent_ids = 0  # how many of them no chunk has carried yet
        self.started = time.perf_counter()
        self._connection = telemetry.connection_opened("openai")
        self.telemetry: TurnTelemetry = self._connection.turn(request_id)
        self.telemetry.generation_started()
        self._first_seen = False
        self._generating = True

    # -- from deltas to text -------------------------------------------------------------------
    def take(self, delta: Delta) -> ThinkSplit:
        """The reasoning/content decided by this delta (records finish reason and usage)."""
        self.telemetry.delta()
        self.token_ids.extend(delta.token_ids)
        self._unsent_ids += len(delta.token_ids)
        split = self.splitter.feed(delta.text)
        if delta.finished:
            self.finish_reason = _FINISH.get(str(delta.finish_reason), "stop")
            self.usage = delta.usage
            split = split + self.splitter.finish()
        return self._shape(split)

    def rest(self) -> ThinkSplit:
        """What the splitter still holds when the stream ended without a finishing delta."""
        return self._shape(self.splitter.finish())

    def _shape(self, split: ThinkSplit) -> ThinkSplit:
        content = self.json.feed(split.content) if self.json is not None else split.content
        reasoning = split.reasoning if self.call.include_reasoning else ""
        if (content or reasoning) and not self._first_seen:
            self._first_seen = True
            self.telemetry.first_token(time.perf_counter() - self.started)
        return ThinkSplit(reasoning, content)

    # -- OpenAI objects ------------------------------------------------------------------------
    def usage_dict(self) -> dict[str, Any]:
        usage = self.usage or Usage(0, 0)
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        if self.call.return_token_ids:  # vLLM's extension: the ids generated since the previous chunk
            choice["token_ids"] = self.token_ids[len(self.token_ids) - self._unsent_ids :]
            self._unsent_ids = 0
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.call.model,
            "choices": [choice],
        }
        if self.call.include_usage:
            body["usage"] = None
        return _event(body)

    async def sse(self, first: Delta | None, stream: AsyncIterator[Delta]) -> AsyncGenerator[str, None]:
        """The event stream: role chunk, deltas, finish chunk, usage chunk (when asked), `[DONE]`."""
        yield self.chunk({"role": "assistant", "content": ""})
        try:
            delta = first
            while delta is not None:
                if piece := _delta_fields(self.take(delta)):
                    yield self.chunk(piece)
                delta = await anext(stream, None)
            if piece := _delta_fields(self.rest()):
                yield self.chunk(piece)
            yield self.chunk({}, self.finish_reason)
            if self.call.include_usage:
                body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created}
                yield _event({**body, "model": self.call.model, "choices": [], "usage": self.usage_dict()})
            self.ended("done")
        except EngineError as exc:
            yield _event(self.failed(exc).body())
        yield "data: [DONE]\n\n"

    async def collect(self, first: Delta | None, stream: AsyncIterator[Delta]) -> dict[str, Any]:
        """The whole `chat.completion` object."""
        total = ThinkSplit()
        delta = first
        while delta is not None:
            total = total + self.take(delta)
            delta = await anext(stream, None)
        total = total + self.rest()
        message: dict[str, Any] = {"role": "assistant", "content": total.content}
        if total.reasoning:
            message["reasoning_content"] = total.reasoning
        choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}
        if self.call.return_token_ids:
            choice["token_ids"] = self.token_ids
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.call.model,
            "choices": [choice],
            "usage": self.usage_dict(),
        }

    # -- ending --------------------------------------------------------------------------------
    def failed(self, exc: EngineError) -> OpenAIError:
        """The OpenAI error for an engine failure (and its telemetry)."""
        error = _engine_error(exc)
        self.telemetry.report_exception(exc)
        self.ended("error", error.code)
        return error

    def ended(self, status: str, code: str | None = None) -> None:
        """Close the telemetry once: generation, request status, connection."""
        if not self._generating:
            return
        self._generating = False
        self.telemetry.generation_ended(self.usage)
        self.telemetry.ended(status, code)
        self._connection.closed()


def _delta_fields(split: ThinkSplit) -> dict[str, str]:
    fields = {}
    if split.reasoning:
        fields["reasoning_content"] = split.reasoning
    if split.content:
        fields["content"] = split.content
    return fields


def _event(body: Mapping[str, Any]) -> str:
    return f"data: {encode_json(body)}\n\n"


def _engine_error(exc: EngineError) -> OpenAIError:
    if isinstance(exc, ContextTooLongError):
        return OpenAIError(400, str(exc), code="context_length_exceeded", param="messages")
    if isinstance(exc, UnsupportedFeature):
        return OpenAIError(400, str(exc), code="unsupported_parameter")
    if isinstance(exc, InvalidRequestError):
        return OpenAIError(400, str(exc), code="invalid_request")
    if isinstance(exc, EngineDeadError):
        message = f"the chat engine is not running ({exc}); retry later, /healthz shows when it is back"
        return OpenAIError(503, message, code="engine_unavailable", type="server_error")
    return OpenAIError(
        500, f"the chat engine failed this request ({exc}); retry it", code="engine_error", type="server_error"
    )


class _Disconnected:
    """Marks that the client went away before the work finished."""


_DISCONNECTED = _Disconnected()


async def _unless_disconnected(request: Request, work: Awaitable[_T]) -> _T | _Disconnected:
    """Await `work` unless the client disconnects first; then cancel it (closing the engine stream
    aborts the engine request) and return `_DISCONNECTED`."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task: asyncio.Future[_T] = asyncio.ensure_future(work)
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
        return _DISCONNECTED
    return task.result()


class _EngineStreamResponse(StreamingResponse):
    """An SSE response that owns its engine stream: however the response ends (finished, client gone,
    cancelled), the engine stream is closed, which aborts a request still running in the engine."""

    def __init__(
        self, events: AsyncGenerator[str, None], stream: AsyncGenerator[Delta, None], completion: Completion
    ) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self._events = events
        self._stream = stream
        self._completion = completion

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()
            await self._stream.aclose()
            self._completion.ended("cancelled")
