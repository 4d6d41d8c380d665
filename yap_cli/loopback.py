"""Running an app on 127.0.0.1 inside the current event loop, and the port and process helpers of servers
started in processes of their own (benchmarks and tests)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:`port` now."""
    with contextlib.closing(socket.socket()) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_process(process: subprocess.Popen[Any], grace_s: float = 20.0) -> None:
    """Terminate `process` and wait for it, killing it after `grace_s` seconds."""
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextlib.asynccontextmanager
async def serve_on_loopback(app: Any) -> AsyncIterator[int]:
    """Serve `app` with uvicorn (lifespan on) in this event loop; yields the port, stops on exit."""
    from yap_server.serving import uvicorn_server

    port = free_port()
    server = uvicorn_server(app, host="127.0.0.1", port=port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            raise RuntimeError("uvicorn failed to start")
        await asyncio.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        await task
