"""`WS /v1/responses`: OpenAI's Responses API over a WebSocket, as Pipecat's default LLM service speaks it.

It runs on the shared WebSocket runtime (`connection.py`): auth, connection slots, the idle timeout,
the bounded send and cancel-and-wait are those of `/ws`. One response runs at a time; each
`response.create` ends with exactly one of `response.completed`, `response.incomplete`,
`response.failed`, or — when it never started — a lone `error`. A bad frame gets an `error` and the
connection stays open. Every event is numbered (`sequence_number`) in send order and kept under
`RESPONSES_MAX_MESSAGE_BYTES`.
"""

from __future__ import annotations

from typing import Any

from starlette.websockets import WebSocket

from yap_engines import ContextTooLongError
from yap_engines.chat import fit_prompt
from yap_engines.errors import InvalidSamplingError
from yap_engines.function_tools import tool_messages
from yap_engines.protocol import SupportsPrefill
from yap_engines.tool_calls import detect_parser, template_renders_tools

from ..connection import Connection, serve_websocket
from ..frames import WireError, encode_json, oversize_bytes
from ..limits import SlidingWindowLimiter
from .conversation import ResponseCache, chained, chat_prompt, user_texts
from .events import (
    MessageInput,
    ResponseCancel,
    ResponseCreate,
    ResponseObject,
    error_event,
    parse_client_event,
)
from .run import ResponseRun, ToolCheck
from .tools import check_outputs, client_tools

RESPONSE = "response"  # the key of the one response a connection runs


class ResponsesRoute:
    """One `/v1/responses` socket: its cache of ended responses, its event numbering, its quotas."""

    json_error_code = "invalid_json"
    idle_reason = "idle timeout"

    def __init__(self, connection: Connection) -> None:
        self.conn = connection
        self.app = app = connection.app
        settings = self.settings = app.settings
        self.max_message_bytes = settings.responses_max_message_bytes
        self.idle_timeout_s = settings.ws_idle_timeout_s
        self.model_id = app.model_id or "yap"
        self.cache = ResponseCache(settings.responses_cache_size)
        self.messages = SlidingWindowLimiter(settings.ws_max_messages_per_window, settings.ws_message_window_seconds)
        self.cancels = SlidingWindowLimiter(settings.ws_max_cancels_per_window, settings.ws_cancel_window_seconds)
        self._sequence = 0
        self.running: ResponseRun | None = None

    # -- sending -------------------------------------------------------------------------------
    def numbered(self, event: dict[str, Any]) -> str:
        """The event's text with the next `sequence_number`, under the frame-size limit."""
        event = {"type": event["type"], "sequence_number": self._next(), **event}
        text = encode_json(event)
        if "response" in event and oversize_bytes(text, self.max_message_bytes) is not None:
            # A response object echoes the request's instructions and tools: those go, the output stays.
            event["response"] = {**event["response"], "instructions": None, "tools": [], "metadata": None}
            text = encode_json(event)
        return text

    async def send_event(self, event: dict[str, Any]) -> None:
        await self.conn.send_text(self.numbered(event))

    # -- what the runtime asks of a route ------------------------------------------------------
    def error_frame(self, code: str, message: str, extra: dict[str, Any], raw: dict[str, Any] | None) -> Any:
        return {"type": "error", "sequence_number": self._next(), **error_event(code, message, extra.get("param"))}

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence - 1

    def sentinel(self, text: str) -> dict[str, Any] | None:
        return None

    async def handle(self, raw: dict[str, Any]) -> bool:
        event = parse_client_event(raw)
        if isinstance(event, ResponseCancel):
            await self.on_cancel(event)
        else:
            self.on_create(event)
        return True

    # -- client events -------------------------------------------------------------------------
    async def on_cancel(self, event: ResponseCancel) -> None:
        """Cancel the running response; a cancel for any other (e.g. finished) response is ignored."""
        run = self.running
        if run is None or (event.response_id is not None and event.response_id != run.response_id):
            return
        if (wait := self.cancels.acquire()) is not None:
            self.app.telemetry.rate_limited("cancels")
            raise WireError("rate_limited", f"too many cancels; retry in {wait:.1f} s")
        await self.conn.cancel([RESPONSE], "client_request")

    def on_create(self, event: ResponseCreate) -> None:
        if self.running is not None and RESPONSE in self.conn.work:
            raise WireError(
                "response_in_progress",
                f"response {self.running.response_id} is still running; wait for its final event or send "
                "response.cancel first",
            )
        if (wait := self.messages.acquire()) is not None:
            self.app.telemetry.rate_limited("messages")
            raise WireError("rate_limited", f"too many requests; retry in {wait:.1f} s")
        run = self.prepare(event)
        self.running = run
        self.conn.start(RESPONSE, _Tracked(self, run))

    def prepare(self, event: ResponseCreate) -> ResponseRun:
        """Validate a create against this deployment and build its run; raise `WireError` when it cannot start."""
        settings, app = self.settings, self.app
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
            sampling = app.sampling.merged(event.sampling_overrides())
        except InvalidSamplingError as exc:
            key = "max_output_tokens" if exc.key == "max_tokens" else exc.key
            hint = " (the server's cap is CHAT_MAX_OUT)" if key == "max_output_tokens" else ""
            raise WireError("invalid_sampling", f"{exc}{hint}", extra={"param": key}) from None
        check_outputs(conversation)
        tools = client_tools(event, settings.responses_tool_name)
        tool = self._tool_check(event, conversation, new_items) if event.generate else None
        if not event.generate and not isinstance(app.chat, SupportsPrefill):
            raise WireError(
                "not_deployed",
                "generate: false warms the chat model's prefix cache, and this server deploys no chat model that "
                f"can (DEPLOY_MODE={settings.deploy_mode}); send the request with generate: true",
                extra={"param": "generate"},
            )
        if app.chat is None and tool is None:
            raise WireError(
                "not_deployed",
                f"this server does not deploy the chat model (DEPLOY_MODE={settings.deploy_mode}); declare the tool "
                f"{settings.responses_tool_name!r} to get the classifier's decision",
            )
        prompt, parser, guided = None, None, None
        if app.chat is not None:
            rendered = chat_prompt(
                conversation, event.instructions, settings.responses_tool_name, settings.screen_analysis_prefix
            )
            persona, history, template_kwargs = rendered.persona, rendered.history, {}
            if (tools is not None and tools.active) or any(m["role"] == "tool" for m in history):
                # the text fallback adds the definitions to the persona (one system message first) and
                # turns results into user messages; a template that renders tools gets them as they are
                messages = tool_messages([*persona, *history], tools, native=template_renders_tools(app.tokenizer))
                split = 1 if persona or (messages.messages and messages.messages[0]["role"] == "system") else 0
                persona, history = messages.messages[:split], messages.messages[split:]
                template_kwargs = messages.template_kwargs
            if tools is not None and tools.active:
                fmt = settings.tool_call_parser
                parser = tools.parser(detect_parser(app.tokenizer) if fmt == "auto" else fmt, app.tokenizer)
                guided = tools.guided()
            try:
                prompt = fit_prompt(app.tokenizer, persona, history, app.chat_max_len, **template_kwargs)
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
        telemetry = self.conn.observed.turn(response.id)
        return ResponseRun(
            response, conversation, prompt, sampling, tool, self.send_event, telemetry, chat=app.chat,
            tokenizer=app.tokenizer, flush_s=app.stream_flush_s, gate=self.conn.quota,
            tool_calls=parser, guided=guided, generate=event.generate,
        )  # fmt: skip

    def _tool_check(self, event: ResponseCreate, conversation: list[Any], new_items: list[Any]) -> ToolCheck | None:
        """The classifier runs when deployed, the request declares the tool, and the newest item is the user's."""
        name = self.settings.responses_tool_name
        newest = new_items[-1] if new_items else None
        if self.app.tool is None or event.tool_choice == "none" or not event.declares_function(name):
            return None
        if not (isinstance(newest, MessageInput) and newest.role == "user"):
            return None
        return ToolCheck(self.app.tool, name, user_texts(conversation)[:-1], newest.text)

    def ended(self, run: ResponseRun) -> None:
        """A response ended (its terminal event went out): cache it, and let the next one start."""
        if self.running is run:
            self.cache.remember(run.ended())
            self.running = None


class _Tracked:
    """A `ResponseRun` as the connection's work, reporting its end to the route."""

    def __init__(self, route: ResponsesRoute, run: ResponseRun) -> None:
        self.route, self.run_ = route, run

    async def run(self) -> None:
        try:
            await self.run_.run()
        finally:
            if self.run_.terminal.sent:
                self.route.ended(self.run_)

    async def stopped(self, reason: str, notify: bool) -> bool:
        cut = await self.run_.stopped(reason, notify)
        self.route.ended(self.run_)
        return cut

    async def crashed(self, exc: Exception) -> None:
        await self.run_.crashed(exc)
        self.route.ended(self.run_)


async def responses_endpoint(websocket: WebSocket) -> None:
    """`WS /v1/responses`: authenticate (`Authorization: Bearer`), take a connection slot, then serve."""
    await serve_websocket(
        websocket, lambda code, message: {"sequence_number": 0, **error_event(code, message)}, ResponsesRoute
    )
