"""`WS /v1/responses`: OpenAI's Responses API over a WebSocket, as Pipecat's default LLM service speaks it.

Auth, connection slots, rate limits and the idle timeout are those of `/ws`. The reader keeps
reading while a response streams, so `response.cancel` acts at once. One response runs at a time;
each `response.create` ends with exactly one of `response.completed`, `response.incomplete`,
`response.failed`, or — when it never started — a lone `error`. A bad frame gets an `error` and
the connection stays open. Events leave through one ordered outbox that numbers them
(`sequence_number`) and keeps every frame under `RESPONSES_MAX_MESSAGE_BYTES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from yap_engines import ContextTooLongError, InferenceEngine, Sampling
from yap_engines.chat import fit_prompt
from yap_engines.errors import InvalidSamplingError
from yap_engines.tool import ToolClassifier

from . import wire
from .admission import receive_within, serve_admitted
from .limits import SlidingWindowLimiter
from .observability import Telemetry
from .responses_conversation import ResponseCache, chained, chat_prompt, user_texts
from .responses_events import (
    MessageInput,
    ResponseCancel,
    ResponseCreate,
    ResponseObject,
    error_event,
    parse_client_event,
)
from .responses_run import ResponseRun, ToolCheck
from .settings import ServerSettings
from .wire import WireError, encode_json

log = logging.getLogger("yap.responses")


class Outbox:
    """Numbers events in order and sends them from one writer task, so producers never await a send."""

    def __init__(self, websocket: WebSocket, max_bytes: int) -> None:
        self.ws = websocket
        self.max_bytes = max_bytes
        self._sequence = 0
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write(), name="responses-outbox")

    def emit(self, event: dict[str, Any]) -> None:
        """Queue one event with the next `sequence_number`."""
        event = {"type": event["type"], "sequence_number": self._sequence, **event}
        self._sequence += 1
        text = encode_json(event)
        if len(text) * 4 > self.max_bytes and len(text.encode()) > self.max_bytes and "response" in event:
            # A response object echoes the request's instructions and tools: those go, the output stays.
            event["response"] = {**event["response"], "instructions": None, "tools": [], "metadata": None}
            text = encode_json(event)
        self._queue.put_nowait(text)

    async def _write(self) -> None:
        while (text := await self._queue.get()) is not None:
            if self.ws.application_state != WebSocketState.CONNECTED:
                continue
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.ws.send_text(text)

    async def aclose(self, code: int | None = None, reason: str = "") -> None:
        """Send what is queued, then (with `code`) close the socket."""
        self._queue.put_nowait(None)
        await asyncio.wait([self._writer])
        if code is not None and self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.ws.close(code, reason)


class ResponsesConnection:
    """One accepted `/v1/responses` socket: its cache of ended responses, the running one, its quotas."""

    def __init__(self, websocket: WebSocket, app_state: Any) -> None:
        self.ws = websocket
        settings: ServerSettings = app_state.settings
        self.settings = settings
        self.engine: InferenceEngine | None = app_state.engines.get("chat") if settings.chat_deployed else None
        self.tool: ToolClassifier | None = app_state.engines.get("tool") if settings.tool_deployed else None
        self.tokenizer: Any = app_state.chat_tokenizer
        self.base_sampling: Sampling = app_state.base_sampling
        self.telemetry: Telemetry = app_state.telemetry
        self.model_id = str(getattr(self.engine, "model_id", None) or "yap")
        client_id = websocket.headers.get("x-client-id") or websocket.query_params.get("client_id")
        self.observed = self.telemetry.connection_opened(client_id[:64] if client_id else None)
        self.outbox = Outbox(websocket, settings.responses_max_message_bytes)
        self.cache = ResponseCache(settings.responses_cache_size)
        self.messages = SlidingWindowLimiter(settings.ws_max_messages_per_window, settings.ws_message_window_seconds)
        self.cancels = SlidingWindowLimiter(settings.ws_max_cancels_per_window, settings.ws_cancel_window_seconds)
        self.running: ResponseRun | None = None
        self._task: asyncio.Task[None] | None = None

    def error(self, code: str, message: str, param: str | None = None) -> None:
        self.telemetry.error(code)
        self.outbox.emit(error_event(code, message, param))

    # -- the reader loop -----------------------------------------------------------------------
    async def serve(self) -> None:
        """Read frames until the client leaves or idles out."""
        close_code: int | None = None
        try:
            while True:
                message = await receive_within(self.ws, self.settings.ws_idle_timeout_s)
                if message is None:
                    self.telemetry.idle_disconnect()
                    await self.cancel_running("idle")
                    close_code = wire.CLOSE_IDLE
                    return
                if message["type"] == "websocket.disconnect":
                    return
                await self.handle_raw(message)
        except WebSocketDisconnect:
            return
        finally:
            await self.cancel_running("disconnect")
            await self.outbox.aclose(close_code, "idle timeout" if close_code else "")
            self.observed.closed()

    async def handle_raw(self, message: Mapping[str, Any]) -> None:
        """Handle one ASGI receive message; every problem becomes an `error` event."""
        text = message.get("text")
        limit = self.settings.responses_max_message_bytes
        if text is None:
            data = message.get("bytes") or b""
            if len(data) > limit:
                self.error("message_too_large", f"frame is {len(data)} bytes; the limit is {limit}")
            else:
                self.error("invalid_message", "binary frames are not supported; send JSON text")
            return
        if (size := wire.oversize_bytes(text, limit)) is not None:
            self.error("message_too_large", f"frame is {size} bytes; the limit is {limit}")
            return
        try:
            event = parse_client_event(text)
            if isinstance(event, ResponseCancel):
                await self.on_cancel(event)
            else:
                self.on_create(event)
        except WireError as exc:
            self.error(exc.code, exc.message, exc.extra.get("param"))
        except Exception as exc:
            log.exception("internal error while handling a frame")
            self.telemetry.report_exception(exc, client_id=self.observed.client_id)
            self.error("internal_error", "the server failed on this frame; it has been logged")

    # -- client events -------------------------------------------------------------------------
    async def on_cancel(self, event: ResponseCancel) -> None:
        """Cancel the running response; a cancel for any other (e.g. finished) response is ignored."""
        run = self.running
        if run is None or (event.response_id is not None and event.response_id != run.response_id):
            return
        if (wait := self.cancels.acquire()) is not None:
            self.telemetry.rate_limited("cancels")
            raise WireError("rate_limited", f"too many cancels; retry in {wait:.1f} s")
        await self.cancel_running("client_request")

    def on_create(self, event: ResponseCreate) -> None:
        if self.running is not None:
            raise WireError(
                "response_in_progress",
                f"response {self.running.response_id} is still running; wait for its final event or send "
                "response.cancel first",
            )
        if (wait := self.messages.acquire()) is not None:
            self.telemetry.rate_limited("messages")
            raise WireError("rate_limited", f"too many requests; retry in {wait:.1f} s")
        run = self.prepare(event)
        self.running = run
        self._task = asyncio.create_task(self._run(run), name=f"response-{run.response_id}")

    def prepare(self, event: ResponseCreate) -> ResponseRun:
        """Validate a create against this deployment and build its run; raise `WireError` when it cannot start."""
        settings = self.settings
        previous = None
        if event.previous_response_id is not None:
            previous = self.cache.get(event.previous_response_id)
            if previous is None:
                raise WireError(
                    "previous_response_not_found",
                    f"response {event.previous_response_id!r} is not in this connection's cache (it keeps the last "
                    f"{settings.responses_cache_size}); send the full conversation without previous_response_id",
                    extra={"param": "previous_response_id"},
                )
        new_items = event.items()
        conversation = chained(previous, new_items)
        if not any(isinstance(item, MessageInput) or item.type == "function_call_output" for item in conversation):
            raise WireError("invalid_request", "input is empty: send at least one message", extra={"param": "input"})
        try:
            sampling = self.base_sampling.merged(event.sampling_overrides())
        except InvalidSamplingError as exc:
            key = "max_output_tokens" if exc.key == "max_tokens" else exc.key
            hint = " (the server's cap is CHAT_MAX_OUT)" if key == "max_output_tokens" else ""
            raise WireError("invalid_sampling", f"{exc}{hint}", extra={"param": key}) from None
        tool = self._tool_check(event, conversation, new_items)
        if self.engine is None and tool is None:
            raise WireError(
                "not_deployed",
                "this server does not deploy the chat model; declare the tool "
                f"{settings.responses_tool_name!r} to get the classifier's decision",
            )
        prompt = None
        if self.engine is not None:
            rendered = chat_prompt(
                conversation, event.instructions, settings.responses_tool_name, settings.screen_analysis_prefix
            )
            try:
                prompt = fit_prompt(self.tokenizer, rendered.persona, rendered.history, settings.chat_max_len)
            except ContextTooLongError as exc:
                raise WireError("context_too_long", str(exc), extra={"param": "input"}) from None
        response = ResponseObject(
            model=event.model or self.model_id,
            instructions=event.instructions,
            previous_response_id=event.previous_response_id,
            max_output_tokens=event.max_output_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            tools=event.tools,
            tool_choice=event.tool_choice,
            metadata=event.metadata,
        )
        telemetry = self.observed.turn(response.id)
        return ResponseRun(response, conversation, prompt, sampling, tool, self.outbox.emit, telemetry)

    def _tool_check(self, event: ResponseCreate, conversation: list[Any], new_items: list[Any]) -> ToolCheck | None:
        """The classifier runs when deployed, the request declares the tool, and the newest item is the user's."""
        name = self.settings.responses_tool_name
        newest = new_items[-1] if new_items else None
        if self.tool is None or event.tool_choice == "none" or not event.declares_function(name):
            return None
        if not (isinstance(newest, MessageInput) and newest.role == "user"):
            return None
        return ToolCheck(self.tool, name, user_texts(conversation)[:-1], newest.text)

    # -- the running response ------------------------------------------------------------------
    async def _run(self, run: ResponseRun) -> None:
        try:
            await run.run(self.engine, self.tokenizer)
        except Exception as exc:
            log.exception("response %s failed", run.response_id)
            run.telemetry.report_exception(exc)
            run.finish_failed("server_error", "the server failed on this response; it has been logged")
        finally:
            if self.running is run and run.terminal_sent:
                self._ended(run)

    def _ended(self, run: ResponseRun) -> None:
        self.cache.remember(run.ended())
        self.running, self._task = None, None

    async def cancel_running(self, reason: str) -> bool:
        """Cancel the running response (its engine request is aborted); True when one was running."""
        run, task = self.running, self._task
        if run is None or task is None:
            return False
        task.cancel()
        await asyncio.wait([task])  # not `await task`: that would re-raise the cancellation here
        cancelled = run.finish_cancelled()
        if cancelled:
            self.telemetry.cancelled(reason)
        if self.running is run:
            self._ended(run)
        return cancelled


async def responses_endpoint(websocket: WebSocket) -> None:
    """`WS /v1/responses`: authenticate (`Authorization: Bearer`), take a connection slot, then serve."""
    await serve_admitted(
        websocket,
        lambda code, message: {"sequence_number": 0, **error_event(code, message)},
        lambda: ResponsesConnection(websocket, websocket.state).serve(),
    )
