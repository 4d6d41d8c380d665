"""The `/ws` endpoint: auth, a connection slot, then a reader loop plus one turn task.

The reader keeps reading while a reply streams, so `cancel`, barge-in (`start`/`message`/`followup`
during a turn), `ping`, the idle timer and disconnects act at once. Every turn ends with exactly
one of `done`, `cancelled`, `error`; a bad frame gets an `error` and the connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from yap_engines import InferenceEngine, Sampling
from yap_engines.tool import ToolClassifier

from . import wire
from .admission import receive_within, serve_admitted
from .draining import LiveConnections
from .limits import SlidingWindowLimiter
from .observability import Telemetry
from .session import Persona, Session, TurnOptions, parse_sampling
from .settings import ServerSettings
from .turn import Turn, TurnDeps
from .wire import UNKNOWN, WireError, error_frame, frame

log = logging.getLogger("yap.ws")

UNMETERED = ("ping", "pong", "end", "cancel")


class Connection:
    """One accepted WebSocket: its session, its running turn and its quotas."""

    def __init__(self, websocket: WebSocket, app_state: Any) -> None:
        self.ws = websocket
        self.settings: ServerSettings = app_state.settings
        self.engine: InferenceEngine | None = (
            app_state.engines.get("chat") if app_state.settings.chat_deployed else None
        )
        self.tool: ToolClassifier | None = app_state.engines.get("tool") if app_state.settings.tool_deployed else None
        self.tokenizer: Any = app_state.chat_tokenizer
        self.base_sampling: Sampling = app_state.base_sampling
        self.session: Session | None = None
        self.turn: Turn | None = None
        self._turn_task: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[Any] | None = None
        self.stalled = False  # the client stopped reading (slow consumer): the connection is being dropped
        self.telemetry: Telemetry = app_state.telemetry
        self.live: LiveConnections = app_state.live_connections
        client_id = websocket.headers.get("x-client-id") or websocket.query_params.get("client_id")
        self.observed = self.telemetry.connection_opened(client_id[:64] if client_id else None)
        self._send_lock = asyncio.Lock()
        s = self.settings
        self.messages = SlidingWindowLimiter(s.ws_max_messages_per_window, s.ws_message_window_seconds)
        self.cancels = SlidingWindowLimiter(s.ws_max_cancels_per_window, s.ws_cancel_window_seconds)
        self.prompt_updates: dict[str, SlidingWindowLimiter] = {}
        # Sentinels are short: longer frames skip the strip-and-compare (the reader's hot path).
        self._sentinel_len = max(len(s.ws_end_sentinel), len(s.ws_cancel_sentinel)) + 8

    # -- sending -------------------------------------------------------------------------------
    async def send(self, message: dict[str, Any]) -> None:
        """Send one frame (frames never interleave); a client that has gone is noticed by the reader.

        A send waits while the transport's write buffer is full, so a client that reads slowly slows
        its own turn down (the engine stream is not read meanwhile): nothing queues up unbounded. A
        client that accepts nothing for `WS_SEND_TIMEOUT_S` is dropped (see `_drop_slow_consumer`).
        """
        async with self._send_lock:
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(WebSocketDisconnect):
                    try:
                        async with asyncio.timeout(self.settings.ws_send_timeout_s):
                            await self.ws.send_text(wire.encode_json(message))
                    except TimeoutError:
                        self._drop_slow_consumer()

    def _drop_slow_consumer(self) -> None:
        """Stop sending and end the connection: the reader is cancelled, which aborts the running turn
        and frees the slot. No close frame can reach a client that reads nothing; it sees 1006."""
        log.warning("dropping a client that accepted no data for %.1f s", self.settings.ws_send_timeout_s)
        self.stalled = True
        self.ws.application_state = WebSocketState.DISCONNECTED
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            self._reader = None  # cancelled once, and never after it has left its loop
            reader.cancel()

    async def error(self, session_id: str, request_id: str, code: str, message: str, **extra: Any) -> None:
        await self.send(error_frame(session_id, request_id, code, message, **extra))

    async def close(self, code: int, reason: str = "") -> None:
        async with self._send_lock:
            if self.ws.application_state == WebSocketState.CONNECTED:
                await self.ws.close(code, reason)

    async def shut_down(self) -> None:
        """The server is stopping: the running turn ends `cancelled` (reason `shutdown`), then close 1012."""
        await self.cancel_turn("shutdown")
        await self.close(wire.CLOSE_SERVICE_RESTART, "server shutting down")

    # -- the reader loop -----------------------------------------------------------------------
    async def serve(self) -> None:
        """Read frames until the client leaves, ends the session, idles out, or stops reading."""
        self._reader = asyncio.current_task()
        self.live.add(self)
        try:
            while True:
                message = await receive_within(self.ws, self.settings.ws_idle_timeout_s)
                if message is None:
                    self.telemetry.idle_disconnect()
                    await self.cancel_turn("idle")
                    await self.close(wire.CLOSE_IDLE, "idle timeout")
                    return
                if message["type"] == "websocket.disconnect":
                    return
                if not await self.handle_raw(message) or self.stalled:
                    return
        except WebSocketDisconnect:
            return
        except asyncio.CancelledError:
            if not self.stalled:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # ours (slow consumer): end here
        finally:
            self.live.discard(self)
            self._reader = None
            await self.cancel_turn("disconnect", notify=False)
            self.observed.closed()

    async def handle_raw(self, message: Mapping[str, Any]) -> bool:
        """Handle one ASGI receive message; False ends the connection."""
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            if len(data) > self.settings.ws_max_message_bytes:
                await self._too_large(len(data))
            else:
                await self.error(UNKNOWN, UNKNOWN, "invalid_message", "binary frames are not supported; send JSON text")
            return True
        limit = self.settings.ws_max_message_bytes
        if (size := wire.oversize_bytes(text, limit)) is not None:
            await self._too_large(size)
            return True
        if len(text) <= self._sentinel_len:
            sentinel = text.strip()
            if sentinel == self.settings.ws_end_sentinel:
                return await self.on_end(UNKNOWN, UNKNOWN)
            if sentinel == self.settings.ws_cancel_sentinel:
                await self.on_cancel(UNKNOWN, UNKNOWN, wire.CancelPayload())
                return True
        envelope: wire.Envelope | None = None
        try:
            envelope = wire.parse_envelope(text)
            return await self.dispatch(envelope)
        except WireError as exc:
            sid, rid = (envelope.session_id, envelope.request_id) if envelope else (UNKNOWN, UNKNOWN)
            self.telemetry.error(exc.code)
            await self.error(sid, rid, exc.code, exc.message, **exc.extra)
        except Exception as exc:
            sid, rid = (envelope.session_id, envelope.request_id) if envelope else (UNKNOWN, UNKNOWN)
            log.exception("internal error while handling a frame", extra={"session_id": sid, "request_id": rid})
            self.telemetry.error("internal_error")
            self.telemetry.report_exception(exc, session_id=sid, request_id=rid, client_id=self.observed.client_id)
            await self.error(sid, rid, "internal_error", "the server failed on this frame; it has been logged")
        return True

    async def _too_large(self, size: int) -> None:
        limit = self.settings.ws_max_message_bytes
        await self.error(UNKNOWN, UNKNOWN, "message_too_large", f"frame is {size} bytes; the limit is {limit}")

    async def dispatch(self, env: wire.Envelope) -> bool:
        if env.type not in UNMETERED and (wait := self.messages.acquire()) is not None:
            self.telemetry.rate_limited("messages")
            raise WireError("rate_limited", f"too many messages; retry in {wait:.1f} s", extra={"retry_after_s": wait})
        if env.type == "ping":
            await self.send(frame("pong", env.session_id, env.request_id))
        elif env.type == "pong":
            pass
        elif env.type == "end":
            return await self.on_end(env.session_id, env.request_id)
        elif env.type == "cancel":
            await self.on_cancel(env.session_id, env.request_id, wire.parse_payload(env))
        elif env.type == "start":
            await self.on_start(env, wire.parse_payload(env))
        elif env.type == "message":
            await self.on_message(env, wire.parse_payload(env))
        elif env.type == "followup":
            await self.on_followup(env, wire.parse_payload(env))
        return True

    # -- frame handlers ------------------------------------------------------------------------
    async def on_start(self, env: wire.Envelope, payload: wire.StartPayload) -> None:
        chat_prompt = (payload.chat_prompt or "").strip()
        if self.settings.chat_deployed and not chat_prompt:
            raise WireError(
                "invalid_payload", "payload.chat_prompt: required (the system prompt) when chat is deployed"
            )
        sampling, options = parse_sampling(payload.sampling, self.base_sampling, TurnOptions())
        previous = self.session.persona.chat_prompt if self.session else None
        if previous is not None and chat_prompt != previous:
            limiter = self.prompt_updates.setdefault(
                env.session_id,
                SlidingWindowLimiter(
                    self.settings.chat_prompt_update_max_per_window, self.settings.chat_prompt_update_window_seconds
                ),
            )
            if (wait := limiter.acquire()) is not None:
                self.telemetry.rate_limited("prompt_updates")
                raise WireError(
                    "rate_limited",
                    f"chat_prompt changes too often; retry in {wait:.1f} s",
                    extra={"retry_after_s": wait},
                )
        await self.cancel_turn("barge_in")
        persona = Persona(chat_prompt, payload.personality, payload.gender)
        history = [item.model_dump() for item in payload.history]
        self.session = Session.create(env.session_id, persona, self.tokenizer, history, sampling, options)
        self.observed.session_started(env.session_id)
        await self.send(
            frame(
                "ack",
                env.session_id,
                env.request_id,
                session_id=env.session_id,
                deploy_mode=self.settings.deploy_mode,
                gender=payload.gender,
                personality=payload.personality,
                model=getattr(self.engine, "model_id", None),
                server_time=wire.server_time(),
            )
        )
        if payload.user_utterance and payload.user_utterance.strip():
            self.start_turn(env.request_id, payload.user_utterance, sampling, options)

    async def on_message(self, env: wire.Envelope, payload: wire.MessagePayload) -> None:
        session = self._require_session()
        if self.engine is None and self.tool is None:
            raise WireError("not_deployed", "message needs the chat model or the tool classifier; neither is deployed")
        sampling, options = parse_sampling(payload.sampling, session.sampling, session.options)
        await self.cancel_turn("barge_in")
        self.start_turn(env.request_id, payload.user_utterance, sampling, options)

    async def on_followup(self, env: wire.Envelope, payload: wire.FollowupPayload) -> None:
        session = self._require_session()
        self._require_chat("followup")
        await self.cancel_turn("barge_in")
        text = self.settings.screen_analysis_prefix + payload.analysis_text
        self.start_turn(env.request_id, text, session.sampling, session.options)

    async def on_cancel(self, session_id: str, request_id: str, payload: wire.CancelPayload) -> None:
        if (wait := self.cancels.acquire()) is not None:
            self.telemetry.rate_limited("cancels")
            raise WireError("rate_limited", f"too many cancels; retry in {wait:.1f} s", extra={"retry_after_s": wait})
        if await self.cancel_turn("client_request", spoken_text=payload.spoken_text):
            return
        if payload.spoken_text is not None and self.session is not None:
            # The reply finished generating but the client was still speaking it: keep only what was said.
            self.session.history.replace_last_assistant(payload.spoken_text)
        await self.send(frame("cancelled", session_id, request_id, reason="client_request", nothing_running=True))

    async def on_end(self, session_id: str, request_id: str) -> bool:
        await self.cancel_turn("client_request")
        await self.send(frame("session_end", session_id, request_id))
        await self.close(wire.CLOSE_NORMAL, "session ended")
        return False

    def _require_session(self) -> Session:
        if self.session is None:
            raise WireError("session_not_started", "send a start frame (with chat_prompt) before message or followup")
        return self.session

    def _require_chat(self, what: str) -> None:
        if self.engine is None:
            raise WireError("not_deployed", f"{what} needs the chat model, which this server does not deploy")

    # -- turns ---------------------------------------------------------------------------------
    def start_turn(self, request_id: str, text: str, sampling: Sampling, options: TurnOptions) -> None:
        assert self.session is not None
        turn = Turn(self.session, request_id, text, sampling, options, self.observed.turn(request_id))
        self.turn = turn
        self._turn_task = asyncio.create_task(self._run_turn(turn), name=f"turn-{request_id}")

    async def _run_turn(self, turn: Turn) -> None:
        deps = TurnDeps(self.engine, self.tool, self.tokenizer, self.settings, self.send)
        try:
            await turn.run(deps)
        except Exception as exc:
            ids = {"session_id": turn.session.session_id, "request_id": turn.request_id}
            log.exception("turn %s failed", turn.request_id, extra=ids)
            turn.telemetry.report_exception(exc, turn.user_text)
            if not turn.terminal_sent:
                turn.terminal_sent = True
                turn.telemetry.ended("error", "internal_error")
                await self.error(
                    turn.session.session_id,
                    turn.request_id,
                    "internal_error",
                    "the server failed on this turn; it has been logged",
                )

    async def cancel_turn(self, reason: str, *, spoken_text: str | None = None, notify: bool = True) -> bool:
        """Cancel the running turn (aborting its engine request); True when one was running."""
        turn, task = self.turn, self._turn_task
        if turn is None or task is None or task.done():
            return False
        turn.spoken_text = spoken_text
        task.cancel()
        await asyncio.wait([task])  # not `await task`: that would re-raise the turn's CancelledError here
        if turn.terminal_sent:
            return False
        turn.terminal_sent = True
        self.telemetry.cancelled(reason)
        turn.telemetry.ended("cancelled")
        if notify:
            await self.send(frame("cancelled", turn.session.session_id, turn.request_id, reason=reason))
        return True


async def ws_endpoint(websocket: WebSocket) -> None:
    """`WS /ws`: authenticate, take a connection slot (or refuse), then serve the connection."""
    await serve_admitted(
        websocket,
        lambda code, message: error_frame(UNKNOWN, UNKNOWN, code, message),
        lambda: Connection(websocket, websocket.state).serve(),
    )
