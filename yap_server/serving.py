"""The uvicorn server Yap runs on: it drains the app's live connections before closing the sockets."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from .app import YapApp


def uvicorn_server(app: Any, *, host: str, port: int, log_level: str = "warning") -> DrainingServer:
    """The one way Yap runs an app under uvicorn (`yap serve`, tests, benchmarks): a `DrainingServer`, with
    a Yap app's `WS_PER_MESSAGE_DEFLATE` (uvicorn's own default for any other app)."""
    options: dict[str, Any] = {}
    if isinstance(app, YapApp):
        options["ws_per_message_deflate"] = app.settings.ws_per_message_deflate
    return DrainingServer(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", **options))


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains a Yap app's live connections before closing the sockets (any other
    ASGI app is served as uvicorn serves it)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if isinstance(self.config.app, YapApp):
            await self.config.app.live_connections.drain()
        await super().shutdown(sockets)
