"""The uvicorn server Yap runs on: it drains the app's live connections before closing the sockets."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from .draining import LiveConnections


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains the app's live connections before closing the sockets."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        live: Any = getattr(getattr(self.config.app, "state", None), "live_connections", None)
        if isinstance(live, LiveConnections):
            await live.drain()
        await super().shutdown(sockets)
