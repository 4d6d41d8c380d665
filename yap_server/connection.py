"""THE WebSocket runtime: `/ws`, `/v1/responses` and `/ws/completions` all run on it.

A route supplies a `Route`: its parser and dispatch (`handle`), the shape of its error frame
(`error_frame`), and the work it starts (`Work`: a turn, a response, a job). The runtime owns the rest:

- admission (`serve_websocket`): the API key, then a connection slot. The Origin check and the
  auth-failure throttle wrap every route as middleware (`security.py`); a refused key is reported
  the way that throttle counts it (close 1008 `authentication_failed`).
- the reader loop and its frame checks: binary, size, JSON (an object, not nested too deeply);
- the idle/silence deadline: the route's `idle_timeout_s`, then close 4000;
- one send path, bounded: a client that accepts nothing for `WS_SEND_TIMEOUT_S` is dropped (the
  reader is cancelled, so its work is aborted and its slot freed; it sees 1006);
- the connection's cancellable work: `start` runs a `Work` as a task, `cancel` cancels tasks and
  waits until they have stopped (closing an engine stream aborts its request), then lets each
  work send its terminal frame; every work guards that frame with one `Terminal`, so exactly one
  goes out;
- the graceful drain on shutdown: `LiveConnections.drain` cancels every connection's work
  (reason `shutdown`) and closes 1012.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from starlette.responses import JSONResponse
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from . import frames
from .auth import WHERE_KEYS_GO, authenticate
from .frames import WireError, encode_json
from .keys import ApiKey
from .quotas import QuotaExceededError, QuotaGate

if TYPE_CHECKING:
    from .state import AppState
    from .telemetry import ConnectionTelemetry

log = logging.getLogger("yap.connection")


class Work(Protocol):
    """A unit of cancellable work on a connection (a `/ws` turn, a response, a completion job).

    Each holds a `Terminal`, the once-only guard its terminal frame goes through in `run`, `stopped`
    and `crashed` alike."""

    async def run(self) -> None:
        """Do the work and send its frames, ending with exactly one terminal frame."""
        ...

    async def stopped(self, reason: str, notify: bool) -> bool:
        """Its task was cancelled and has stopped: send the terminal frame (when `notify`) unless one went
        out already. True when the work was cut short by this cancel."""
        ...

    async def crashed(self, exc: Exception) -> None:
        """Its task raised `exc` (a bug): send the route's internal-error terminal frame unless one went out."""
        ...


class Terminal:
    """The once-only terminal guard every `Work` holds: its terminal frame goes out exactly once.

    `claim()` is True the first time only; a work claims before it sends (before the send's await, so a
    cancel landing during the send sees it), and `stopped`/`crashed` send nothing once it is claimed."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False

    def claim(self) -> bool:
        """Take the terminal frame: True when no terminal frame was claimed before."""
        if self.sent:
            return False
        self.sent = True
        return True


class Route(Protocol):
    """What a WebSocket route supplies: its limits, its parser/dispatch and its error frame."""

    max_message_bytes: int
    idle_timeout_s: float
    idle_reason: str
    json_error_code: str

    def error_frame(self, code: str, message: str, extra: dict[str, Any], frame: dict[str, Any] | None) -> Any:
        """The route's error frame for a refused frame (`frame`: the parsed JSON object, when there is one)."""
        ...

    def sentinel(self, text: str) -> dict[str, Any] | None:
        """A raw (non-JSON) text frame the route accepts, as the JSON frame it stands for; else None."""
        ...

    async def handle(self, frame: dict[str, Any]) -> bool:
        """Parse and act on one JSON object frame; raise `WireError` to refuse it. False ends the connection."""
        ...


async def receive_within(websocket: WebSocket, timeout_s: float) -> Message | None:
    """The next ASGI message, or None when the client stayed silent for `timeout_s` seconds.

    `asyncio.timeout`, not `wait_for`: no extra task per frame read."""
    try:
        async with asyncio.timeout(timeout_s):
            return await websocket.receive()
    except TimeoutError:
        return None


def decode_object(text: str, code: str) -> dict[str, Any]:
    """Parse a text frame as one JSON object; raise `WireError(code)` saying what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WireError(code, f"frame is not valid JSON ({exc.msg} at char {exc.pos}); send one JSON object") from None
    except RecursionError:
        raise WireError(code, "frame is nested too deeply: flatten it") from None
    if not isinstance(data, dict):
        raise WireError(code, f"frame must be a JSON object, got {type(data).__name__}")
    return data


class Connection:
    """One accepted WebSocket: its send path, its reader loop and its running work."""

    def __init__(self, websocket: WebSocket, app: AppState, observed: ConnectionTelemetry, key: ApiKey) -> None:
        self.ws = websocket
        self.app = app
        self.key = key
        self.quota = QuotaGate(app.quotas, key)  # what each generation on this connection is admitted through
        self.settings = app.settings
        self.telemetry = app.telemetry
        self.observed = observed
        self.work: dict[str, tuple[Work, asyncio.Task[None]]] = {}
        self.stalled = False  # the client stopped reading (slow consumer): the connection is being dropped
        self._send_lock = asyncio.Lock()
        self._reader: asyncio.Task[Any] | None = None
        self._background: list[asyncio.Task[None]] = []

    # -- sending -------------------------------------------------------------------------------
    async def send(self, message: dict[str, Any]) -> None:
        """Send one frame as compact JSON (see `send_text`)."""
        await self.send_text(encode_json(message))

    async def send_text(self, text: str) -> None:
        """Send one text frame; frames never interleave, and a client that has gone is noticed by the reader.

        A send waits while the transport's write buffer is full, so a client that reads slowly slows
        its own work down (the engine stream is not read meanwhile): nothing queues up unbounded. A
        client that accepts nothing for `WS_SEND_TIMEOUT_S` is dropped.
        """
        async with self._send_lock:
            if self.ws.application_state != WebSocketState.CONNECTED:
                return
            try:
                async with asyncio.timeout(self.settings.ws_send_timeout_s):
                    await self.ws.send_text(text)
            except TimeoutError:
                self._drop_slow_consumer()
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.ws.application_state = WebSocketState.DISCONNECTED

    def _drop_slow_consumer(self) -> None:
        """Stop sending and end the connection: the reader is cancelled, which aborts the running work
        and frees the slot. No close frame can reach a client that reads nothing; it sees 1006."""
        log.warning("dropping a client that accepted no data for %.1f s", self.settings.ws_send_timeout_s)
        self.stalled = True
        self.telemetry.error("slow_consumer")
        self.ws.application_state = WebSocketState.DISCONNECTED
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            self._reader = None  # cancelled once, and never after it has left its loop
            reader.cancel()

    async def close(self, code: int, reason: str = "") -> None:
        async with self._send_lock:
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                    await self.ws.close(code, reason)

    # -- work ----------------------------------------------------------------------------------
    def start(self, key: str, work: Work) -> None:
        """Run `work` as this connection's task `key` (the route checks how many may run at once)."""
        task = asyncio.create_task(self._run(key, work), name=f"work-{key}")
        self.work[key] = (work, task)

    async def _run(self, key: str, work: Work) -> None:
        try:
            await work.run()
        except Exception as exc:
            log.exception("work %s failed", key)
            await work.crashed(exc)
        finally:
            entry = self.work.get(key)
            if entry is not None and entry[0] is work:
                del self.work[key]

    def spawn(self, coro: Any, name: str) -> None:
        """Run a background task (e.g. a keepalive) for the connection's lifetime."""
        self._background.append(asyncio.create_task(coro, name=name))

    async def cancel(self, keys: Iterable[str] | None, reason: str, *, notify: bool = True) -> list[str]:
        """Cancel the work `keys` (None: all of it), wait until it has stopped, then let each send its
        terminal frame (when `notify`). Returns the keys that were cut short."""
        chosen = list(self.work) if keys is None else [k for k in keys if k in self.work]
        entries = [(key, *self.work[key]) for key in chosen]
        running = [(key, work, task) for key, work, task in entries if not task.done()]
        cancelled_at = time.perf_counter()
        for _, _, task in running:
            task.cancel()
        if running:
            await asyncio.wait([task for _, _, task in running])  # not gather: that would re-raise here
            self.telemetry.cancel_stopped(time.perf_counter() - cancelled_at)
        cut = []
        for key, work, _ in running:
            if self.work.get(key, (None,))[0] is work:
                del self.work[key]
            if await work.stopped(reason, notify):
                self.telemetry.cancelled(reason)
                cut.append(key)
        return cut

    # -- the reader loop -----------------------------------------------------------------------
    async def serve(self, route: Route) -> None:
        """Read frames until the client leaves, the route ends the connection, it idles out, or stops reading."""
        self._reader = asyncio.current_task()
        self.app.live.add(self)
        try:
            while True:
                message = await receive_within(self.ws, route.idle_timeout_s)
                if message is None:
                    self.telemetry.idle_disconnect()
                    await self.cancel(None, "idle")
                    await self.close(frames.CLOSE_IDLE, route.idle_reason)
                    return
                if message["type"] == "websocket.disconnect":
                    return
                if not await self._frame(route, message) or self.stalled:
                    return
        except WebSocketDisconnect:
            return
        except asyncio.CancelledError:
            if not self.stalled:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # ours (slow consumer): end here
        finally:
            self.app.live.discard(self)
            self._reader = None
            for task in self._background:
                task.cancel()
            await self.cancel(None, "disconnect", notify=False)
            self.observed.closed()

    async def _frame(self, route: Route, message: Message) -> bool:
        """Check and hand one ASGI message to the route; every problem becomes the route's error frame."""
        text = message.get("text")
        limit = route.max_message_bytes
        frame: dict[str, Any] | None = None
        try:
            if text is None:
                data = message.get("bytes") or b""
                if len(data) > limit:
                    raise WireError("message_too_large", f"frame is {len(data)} bytes; the limit is {limit}")
                raise WireError(route.json_error_code, "binary frames are not supported; send JSON text")
            if (size := frames.oversize_bytes(text, limit)) is not None:
                raise WireError("message_too_large", f"frame is {size} bytes; the limit is {limit}")
            frame = route.sentinel(text)
            if frame is None:
                frame = decode_object(text, route.json_error_code)
            return await route.handle(frame)
        except WireError as exc:
            self.telemetry.error(exc.code)
            await self.send(route.error_frame(exc.code, exc.message, exc.extra, frame))
        except Exception as exc:
            log.exception("internal error while handling a frame")
            self.telemetry.error("internal_error")
            self.telemetry.report_exception(exc, client_id=self.observed.client_id)
            message_text = "the server failed on this frame; it has been logged"
            await self.send(route.error_frame("internal_error", message_text, {}, frame))
        return True

    async def shut_down(self) -> None:
        """The server is stopping: running work ends cancelled (reason `shutdown`), then close 1012."""
        await self.cancel(None, "shutdown")
        await self.close(frames.CLOSE_SERVICE_RESTART, "server shutting down")


async def serve_websocket(websocket: WebSocket, refusal: Any, make_route: Any) -> None:
    """Admit `websocket` and serve it with the route `make_route(connection)` builds.

    Identify the key, take one of its sessions, accept, take a connection slot, then run the reader loop
    and give both back. A key over its concurrent-session limit is refused at the handshake with HTTP
    429 (`Retry-After`, and the refusal as a JSON error body), before the socket is accepted. Any other
    refused client gets one error frame in the route's own shape (`refusal(code, message)`) and a close:
    1008 `authentication_failed` for a missing or wrong key, 1013 `server_at_capacity` when no slot frees
    within `WS_HANDSHAKE_ACQUIRE_TIMEOUT_S` (or a session refusal, on a server that cannot answer a
    handshake with HTTP).
    """
    app: AppState = websocket.state.app
    settings, slots, telemetry = app.settings, app.slots, app.telemetry
    key = authenticate(websocket)
    if key is not None:
        try:
            await app.quotas.open_session(key)
        except QuotaExceededError as exc:
            await _refuse_handshake(websocket, exc, refusal)
            return
    try:
        await websocket.accept()

        async def refuse(reason: str, code: str, message: str, close_code: int) -> None:
            telemetry.rejected(reason)
            await websocket.send_text(encode_json(refusal(code, message)))
            await websocket.close(close_code, code)

        if key is None:
            message = f"missing or wrong API key: {WHERE_KEYS_GO}"
            await refuse("auth", "authentication_failed", message, frames.CLOSE_POLICY_VIOLATION)
            return
        waiting_since = time.perf_counter()
        if not await slots.acquire(settings.ws_handshake_acquire_timeout_s):
            message = f"all {slots.capacity} connection slots are busy; retry with backoff"
            await refuse("capacity", "server_at_capacity", message, frames.CLOSE_TRY_AGAIN_LATER)
            return
        telemetry.slot_waited(time.perf_counter() - waiting_since)
        try:
            client_id = websocket.headers.get("x-client-id") or websocket.query_params.get("client_id")
            observed = telemetry.connection_opened(client_id[:64] if client_id else None)
            connection = Connection(websocket, app, observed, key)
            await connection.serve(make_route(connection))
        finally:
            slots.release()
    finally:
        if key is not None:
            await app.quotas.close_session(key)


async def _refuse_handshake(websocket: WebSocket, exc: QuotaExceededError, refusal: Any) -> None:
    """Refuse a handshake over the key's session limit: HTTP 429 (or 503) with `Retry-After` and the
    rate-limit headers; a server without the denial-response extension gets the route's error frame
    and close 1013 instead."""
    found = exc.refusal
    code = "rate_limited" if found.status == 429 else found.kind
    body = {"error": {"code": code, "message": found.message, **found.extra()}}
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        response = JSONResponse(body, status_code=found.status, headers=found.http_headers())
        await websocket.send_denial_response(response)
        return
    await websocket.accept()
    await websocket.send_text(encode_json(refusal(code, found.message)))
    await websocket.close(frames.CLOSE_TRY_AGAIN_LATER, code)
