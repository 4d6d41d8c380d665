"""The uvicorn server Yap runs on: it drains the app's live connections before closing the sockets."""

from __future__ import annotations

import socket

import uvicorn

from .app import YapApp


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains a Yap app's live connections before closing the sockets (any other
    ASGI app is served as uvicorn serves it)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if isinstance(self.config.app, YapApp):
            await self.config.app.live_connections.drain()
        await super().shutdown(sockets)
