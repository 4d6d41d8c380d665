"""Admitting a WebSocket (the API key, then a connection slot) and reading it with a silence deadline.
Shared by every WebSocket route."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Message
from starlette.websockets import WebSocket

from . import wire
from .auth import WHERE_KEYS_GO, key_is_valid, presented_key
from .limits import ConnectionSlots
from .observability import Telemetry
from .settings import ServerSettings

ErrorMessage = Callable[[str, str], dict[str, Any]]
"""Builds the route's own error frame from (code, message)."""


async def serve_admitted(
    websocket: WebSocket, error_message: ErrorMessage, serve: Callable[[], Awaitable[None]]
) -> None:
    """Accept `websocket`, check its key and take a connection slot, then run `serve()` and give the slot back.

    A refused client gets one error frame in the route's own shape (`error_message(code, message)`) and a
    close: 1008 `authentication_failed` for a missing or wrong key, 1013 `server_at_capacity` when no slot
    frees within `WS_HANDSHAKE_ACQUIRE_TIMEOUT_S`.
    """
    state = websocket.state
    settings: ServerSettings = state.settings
    slots: ConnectionSlots = state.slots
    telemetry: Telemetry = state.telemetry
    await websocket.accept()

    async def refuse(reason: str, code: str, message: str, close_code: int) -> None:
        telemetry.rejected(reason)
        await websocket.send_json(error_message(code, message))
        await websocket.close(close_code, code)

    if not key_is_valid(presented_key(websocket), settings.api_keys):
        message = f"missing or wrong API key: {WHERE_KEYS_GO}"
        await refuse("auth", "authentication_failed", message, wire.CLOSE_POLICY_VIOLATION)
        return
    waiting_since = time.perf_counter()
    if not await slots.acquire(settings.ws_handshake_acquire_timeout_s):
        message = f"all {slots.capacity} connection slots are busy; retry with backoff"
        await refuse("capacity", "server_at_capacity", message, wire.CLOSE_TRY_AGAIN_LATER)
        return
    telemetry.slot_waited(time.perf_counter() - waiting_since)
    try:
        await serve()
    finally:
        slots.release()


async def receive_within(websocket: WebSocket, timeout_s: float) -> Message | None:
    """The next ASGI message, or None when the client stayed silent for `timeout_s` seconds.

    `asyncio.timeout`, not `wait_for`: no extra task per frame read."""
    try:
        async with asyncio.timeout(timeout_s):
            return await websocket.receive()
    except TimeoutError:
        return None
