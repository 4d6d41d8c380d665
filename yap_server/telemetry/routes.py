"""Requests by route and status code, counted at the edge of the app (`yap_http_requests_total`).

HTTP requests count with their response status; a WebSocket handshake counts as 101 when accepted, as
its denial status (429, 403…) when refused, and as 1000+ close codes are not statuses, a socket closed
before it was accepted counts as 403. Paths that no route mounts count as `other`, so the label's values
stay bounded."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .core import Telemetry


class RouteCounter:
    """ASGI middleware: count each request by its route's path and the status it got."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry, paths: Iterable[str]) -> None:
        self.app = app
        self.telemetry = telemetry
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.paths else "other"
        counted = False

        async def counting(message: Message) -> None:
            nonlocal counted
            kind = message["type"]
            if not counted:
                code = None
                if kind in ("http.response.start", "websocket.http.response.start"):
                    code = message["status"]
                elif kind == "websocket.accept":
                    code = 101
                elif kind == "websocket.close":
                    code = 403
                if code is not None:
                    counted = True
                    self.telemetry.http_request(route, int(code))
            await send(message)

        await self.app(scope, receive, counting)
