"""`WS /ws`: the Yap protocol's parser and dispatch, on the shared WebSocket runtime (`connection.py`).

The runtime keeps reading while a reply streams, so `cancel`, barge-in (`start`/`message`/`followup`
during a turn), `ping`, the idle timer and disconnects act at once. One turn runs at a time; every
turn ends with exactly one of `done`, `cancelled`, `error`; a bad frame gets an `error` and the
connection stays open.
"""

from __future__ import annotations

from typing import Any

from starlette.websockets import WebSocket

from yap_engines import ContextTooLongError
from yap_engines.protocol import ReportsCacheBlock, SupportsPrefill

from .. import frames
from ..connection import Connection, serve_websocket
from ..frames import WireError
from ..limits import SlidingWindowLimiter
from . import wire
from .session import Persona, Session, TurnOptions
from .turn import Turn
from .warm import WARM, CacheCover, Warm, stable_text, warm_prompt
from .wire import UNKNOWN, error_frame, frame, parse_sampling

UNMETERED = ("ping", "pong", "end", "cancel", "prefill")  # prefill has its own quota
TURN = "turn"  # the key of the one turn a connection runs


def _frame_id(raw: dict[str, Any] | None, key: str) -> str:
    value = raw.get(key) if raw is not None else None
    return value if isinstance(value, str) and value else UNKNOWN


class WsRoute:
    """One `/ws` connection's protocol state: its session, its quotas, and the frames it accepts."""

    json_error_code = "invalid_message"
    idle_reason = wire.IDLE_CLOSE_REASON

    def __init__(self, connection: Connection) -> None:
        self.conn = connection
        app = connection.app
        self.app = app
        s = self.settings = app.settings
        self.max_message_bytes = s.ws_max_message_bytes
        self.idle_timeout_s = s.ws_idle_timeout_s
        self.session: Session | None = None
        self.cover: CacheCover | None = None  # what the engine's prefix cache holds for this session (warm.py)
        self.messages = SlidingWindowLimiter(s.ws_max_messages_per_window, s.ws_message_window_seconds)
        self.cancels = SlidingWindowLimiter(s.ws_max_cancels_per_window, s.ws_cancel_window_seconds)
        self.prefills = SlidingWindowLimiter(s.ws_max_prefills_per_window, s.ws_prefill_window_seconds)
        self.prompt_updates: dict[str, SlidingWindowLimiter] = {}
        self.sentinels = {s.ws_end_sentinel: "end", s.ws_cancel_sentinel: "cancel"}
        # Sentinels are short: longer frames skip the strip-and-compare (the reader's hot path).
        self._sentinel_len = max(len(s.ws_end_sentinel), len(s.ws_cancel_sentinel)) + 8

    # -- what the runtime asks of a route ------------------------------------------------------
    def error_frame(self, code: str, message: str, extra: dict[str, Any], raw: dict[str, Any] | None) -> Any:
        return error_frame(_frame_id(raw, "session_id"), _frame_id(raw, "request_id"), code, message, **extra)

    def sentinel(self, text: str) -> dict[str, Any] | None:
        if len(text) > self._sentinel_len or (kind := self.sentinels.get(text.strip())) is None:
            return None
        return {"type": kind, "session_id": UNKNOWN, "request_id": UNKNOWN, "payload": {}}

    async def handle(self, raw: dict[str, Any]) -> bool:
        env = wire.parse_envelope(raw)
        if env.type not in UNMETERED and (wait := self.messages.acquire()) is not None:
            self.app.telemetry.rate_limited("messages")
            raise WireError("rate_limited", f"too many messages; retry in {wait:.1f} s", extra={"retry_after_s": wait})
        if env.type == "ping":
            await self.conn.send(frame("pong", env.session_id, env.request_id))
        elif env.type == "end":
            return await self.on_end(env)
        elif env.type == "cancel":
            await self.on_cancel(env, wire.parse_payload(env))
        elif env.type == "start":
            await self.on_start(env, wire.parse_payload(env))
        elif env.type == "message":
            await self.on_message(env, wire.parse_payload(env))
        elif env.type == "followup":
            await self.on_followup(env, wire.parse_payload(env))
        elif env.type == "prefill":
            await self.on_prefill(env, wire.parse_payload(env))
        return True

    # -- frame handlers ------------------------------------------------------------------------
    async def on_start(self, env: wire.Envelope, payload: wire.StartPayload) -> None:
        settings = self.settings
        chat_prompt = (payload.chat_prompt or "").strip()
        if settings.chat_deployed and not chat_prompt:
            raise WireError(
                "invalid_payload", "payload.chat_prompt: required (the system prompt) when chat is deployed"
            )
        sampling, options = parse_sampling(payload.sampling, self.app.sampling, TurnOptions())
        previous = self.session.persona.chat_prompt if self.session else None
        if previous is not None and chat_prompt != previous:
            limiter = self.prompt_updates.setdefault(
                env.session_id,
                SlidingWindowLimiter(
                    settings.chat_prompt_update_max_per_window, settings.chat_prompt_update_window_seconds
                ),
            )
            if (wait := limiter.acquire()) is not None:
                self.app.telemetry.rate_limited("prompt_updates")
                raise WireError(
                    "rate_limited",
                    f"chat_prompt changes too often; retry in {wait:.1f} s",
                    extra={"retry_after_s": wait},
                )
        await self.conn.cancel([TURN], "barge_in")
        await self.conn.cancel([WARM], "cancelled", notify=False)
        persona = Persona(chat_prompt, payload.personality, payload.gender)
        history = [item.model_dump() for item in payload.history]
        self.session = Session.create(env.session_id, persona, self.app.tokenizer, history, sampling, options)
        self.conn.observed.session_started(env.session_id)
        await self.conn.send(
            wire.ack_frame(
                env.session_id,
                env.request_id,
                "start",
                session_id=env.session_id,
                deploy_mode=settings.deploy_mode,
                gender=payload.gender,
                personality=payload.personality,
                model=self.app.model_id,
                server_time=wire.server_time(),
            )
        )
        if payload.user_utterance and payload.user_utterance.strip():
            self.start_turn(env.request_id, payload.user_utterance, sampling, options, classify=True)
        elif settings.ws_warm_after_start and self.app.chat is not None:
            await self.start_warm(None, "", kind="start", replying=False)

    async def on_message(self, env: wire.Envelope, payload: wire.MessagePayload) -> None:
        session = self._require_session()
        if self.app.chat is None and self.app.tool is None:
            raise WireError("not_deployed", "message needs the chat model or the tool classifier; neither is deployed")
        sampling, options = parse_sampling(payload.sampling, session.sampling, session.options)
        await self.conn.cancel([TURN], "barge_in")
        # A running warm is aborted: the blocks it computed stay cached, and the turn computes the rest
        # (left to finish, it would compute them a second time beside the turn).
        await self.conn.cancel([WARM], "cancelled", notify=False)
        await self.conn.send(wire.ack_frame(env.session_id, env.request_id, "message", ok=True))
        self.start_turn(env.request_id, payload.user_utterance, sampling, options, classify=True)

    async def on_followup(self, env: wire.Envelope, payload: wire.FollowupPayload) -> None:
        """A chat-only reply to the screen analysis: no tool routing (a `yes` here would loop back to a screenshot)."""
        session = self._require_session()
        if self.app.chat is None:
            mode = self.settings.deploy_mode
            raise WireError(
                "not_deployed", f"followup needs the chat model, which this server does not deploy (DEPLOY_MODE={mode})"
            )
        await self.conn.cancel([TURN], "barge_in")
        await self.conn.cancel([WARM], "cancelled", notify=False)
        await self.conn.send(wire.ack_frame(env.session_id, env.request_id, "followup", ok=True))
        text = self.settings.screen_analysis_prefix + payload.analysis_text
        self.start_turn(env.request_id, text, session.sampling, session.options, classify=False)

    async def on_cancel(self, env: wire.Envelope, payload: wire.CancelPayload) -> None:
        if (wait := self.cancels.acquire()) is not None:
            self.app.telemetry.rate_limited("cancels")
            raise WireError("rate_limited", f"too many cancels; retry in {wait:.1f} s", extra={"retry_after_s": wait})
        entry = self.conn.work.get(TURN)
        if entry is not None:
            turn = entry[0]
            assert isinstance(turn, Turn)
            turn.spoken_text = payload.spoken_text
        if await self.conn.cancel([TURN], "client_request"):
            if payload.spoken_text is not None:  # a barge-in: history now holds the spoken part of the reply
                await self.warm_after_turn()
            return
        if payload.spoken_text is not None and self.session is not None:
            # The reply finished generating but the client was still speaking it: keep only what was said.
            if self.session.history.replace_last_assistant(payload.spoken_text):
                await self.warm_after_turn()
        await self.conn.send(
            frame("cancelled", env.session_id, env.request_id, reason="client_request", nothing_running=True)
        )

    async def on_prefill(self, env: wire.Envelope, payload: wire.PrefillPayload) -> None:
        """Warm the prompt the next `message` will send while the user is still speaking (see `warm.py`)."""
        self._require_session()
        if self.app.chat is None:
            mode = self.settings.deploy_mode
            raise WireError(
                "not_deployed", f"prefill warms the chat model, which this server does not deploy (DEPLOY_MODE={mode})"
            )
        if (wait := self.prefills.acquire()) is not None:
            self.app.telemetry.rate_limited("prefills")
            raise WireError("rate_limited", f"too many prefills; retry in {wait:.1f} s", extra={"retry_after_s": wait})
        replying = TURN in self.conn.work
        await self.start_warm(env.request_id, stable_text(payload.user_utterance), kind="prefill", replying=replying)

    async def on_end(self, env: wire.Envelope) -> bool:
        await self.conn.cancel([WARM], "cancelled", notify=False)
        await self.conn.cancel([TURN], "client_request")
        await self.conn.send(frame("session_end", env.session_id, env.request_id))
        await self.conn.close(frames.CLOSE_NORMAL, "session ended")
        return False

    def _require_session(self) -> Session:
        if self.session is None:
            raise WireError(
                "session_not_started", "send a start frame (with chat_prompt) before message, followup or prefill"
            )
        return self.session

    # -- turns ---------------------------------------------------------------------------------
    def start_turn(self, request_id: str, text: str, sampling: Any, options: TurnOptions, *, classify: bool) -> None:
        assert self.session is not None
        tool = self.app.tool if classify else None
        telemetry = self.conn.observed.turn(request_id)
        turn = Turn(
            self.session, request_id, text, sampling, options, telemetry, self.app, tool, self.conn.send,
            gate=self.conn.quota,
        )  # fmt: skip
        turn.after = self.warm_after_turn
        turn.cover = self._cover()
        self.conn.start(TURN, turn)

    # -- warms ---------------------------------------------------------------------------------
    def _cover(self) -> CacheCover | None:
        """This session's `CacheCover` (None without a chat model), made on first use with the engine's block."""
        chat = self.app.chat
        if self.cover is None and chat is not None:
            self.cover = CacheCover(chat.cache_block_size if isinstance(chat, ReportsCacheBlock) else 1)
        return self.cover

    async def warm_after_turn(self) -> None:
        """The turn ended: warm its history (with the reply as kept) for the next turn, when settings ask."""
        if self.settings.ws_warm_after_turn and self.session is not None and self.app.chat is not None:
            await self.start_warm(None, "", kind="turn", replying=False)

    async def start_warm(self, request_id: str | None, partial: str, *, kind: str, replying: bool) -> None:
        """Supersede the running warm (aborted in the engine) with one for `partial` (the stable part of the
        interim transcript). `request_id` is the `prefill` frame's, whose `ack` reports the cache; None for
        the automatic warms, which answer nothing. While a turn runs, only persona and history up to its
        reply can be warmed: the reply's text is not known yet."""
        session, chat = self.session, self.app.chat
        assert session is not None and chat is not None
        if not isinstance(chat, SupportsPrefill):
            if request_id is not None:
                raise WireError("not_deployed", f"the {chat.name} engine cannot warm prompts; send the message alone")
            return
        settings = self.settings
        try:
            messages, ids = warm_prompt(
                session,
                self.app.tokenizer,
                self.app.chat_max_len,
                min(settings.history_max_tokens, self.app.chat_max_len),
                settings.history_trim_ratio,
                partial="" if replying else partial,
                role="assistant" if replying else "user",
            )
        except ContextTooLongError as exc:
            if request_id is None:
                return
            raise WireError("context_too_long", str(exc)) from None
        cover = self._cover()
        assert cover is not None
        entry = self.conn.work.get(WARM)
        running = entry[0] if entry is not None and isinstance(entry[0], Warm) else None
        if running is not None and not cover.adds(ids, running.token_ids):
            running.take_over(request_id, ids)  # it computes every whole block of this one: no restart
            self.app.telemetry.warm_ended(kind, "skipped")
            return
        if running is not None:
            running.stop_reason = "superseded"
        await self.conn.cancel([WARM], "superseded", notify=False)
        if not cover.adds(ids):  # nothing the cache lacks: answer at once, nothing reaches the engine
            self.app.telemetry.warm_ended(kind, "skipped")
            if request_id is not None:
                ack = wire.ack_frame(
                    session.session_id, request_id, "prefill", prompt_tokens=len(ids), cached_tokens=cover.held(ids)
                )
                await self.conn.send(ack)
            return
        send = self.conn.send
        warm = Warm(
            chat,
            session.session_id,
            request_id or "",
            ids,
            messages,
            send,
            self.app.telemetry,
            ack=request_id is not None,
            kind=kind,
            cover=cover,
        )
        self.conn.start(WARM, warm)


async def ws_endpoint(websocket: WebSocket) -> None:
    """`WS /ws`: authenticate, take a connection slot (or refuse), then serve the connection."""
    await serve_websocket(websocket, lambda code, message: error_frame(UNKNOWN, UNKNOWN, code, message), WsRoute)
