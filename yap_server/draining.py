"""Graceful shutdown: before the server closes its sockets, every `/ws` turn still running ends with
`cancelled {reason: "shutdown"}` and its connection closes with 1012 (service restart).

uvicorn closes every socket at once when it stops (the app only sees the disconnect afterwards), so
the server that runs the app drains it first (`yap_server.serving.DrainingServer`, used by `yap serve`
and `serve_on_loopback`). The registry lives on the app (`app.state.live_connections`), never at module level.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Drainable(Protocol):
    async def shut_down(self) -> None:
        """Tell the client the server is going away and close the connection."""


class LiveConnections:
    """The connections an app serves right now, so a shutdown can end them politely."""

    def __init__(self) -> None:
        self._connections: set[Drainable] = set()

    def __len__(self) -> int:
        return len(self._connections)

    def add(self, connection: Drainable) -> None:
        self._connections.add(connection)

    def discard(self, connection: Drainable) -> None:
        self._connections.discard(connection)

    async def drain(self) -> None:
        """Shut every live connection down (each one's failure stays its own)."""
        await asyncio.gather(*(c.shut_down() for c in list(self._connections)), return_exceptions=True)
