"""`WS_PER_MESSAGE_DEFLATE`: the server offers permessage-deflate only when asked, on every way it is run
(`yap serve`, tests and benchmarks all build their uvicorn server with `yap_server.serving.uvicorn_server`)."""

from __future__ import annotations

import json

import pytest
import websockets

from yap_cli.loopback import serve_on_loopback
from yap_engines import FakeEngine
from yap_engines.settings import SettingsError
from yap_server.app import create_app
from yap_server.settings import ServerSettings

from .conftest import server_settings


async def negotiated_extensions(**overrides: object) -> tuple[str | None, str]:
    """The `Sec-WebSocket-Extensions` the server answered a deflate-offering client with, and a pong's type."""
    app = create_app(server_settings(text_api_key="app-test-key", **overrides), engines={"chat": FakeEngine(seed=1)})
    async with serve_on_loopback(app) as port:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws?api_key=app-test-key", compression="deflate") as ws:
            await ws.send(json.dumps({"type": "ping", "session_id": "s", "request_id": "p", "payload": {}}))
            pong = json.loads(await ws.recv())
            assert ws.response is not None
            return ws.response.headers.get("Sec-WebSocket-Extensions"), pong["type"]


async def test_deflate_is_off_by_default_and_frames_still_flow() -> None:
    assert await negotiated_extensions() == (None, "pong")


async def test_deflate_is_negotiated_when_the_setting_asks_for_it() -> None:
    extensions, pong = await negotiated_extensions(ws_per_message_deflate=True)
    assert extensions is not None and extensions.startswith("permessage-deflate")
    assert pong == "pong"


def test_the_setting_reads_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXT_API_KEY", "app-test-key")
    monkeypatch.setenv("MAX_CONCURRENT_CONNECTIONS", "4")
    monkeypatch.setenv("WS_PER_MESSAGE_DEFLATE", "1")
    assert ServerSettings.from_env().ws_per_message_deflate is True
    monkeypatch.setenv("WS_PER_MESSAGE_DEFLATE", "maybe")
    with pytest.raises(SettingsError, match="WS_PER_MESSAGE_DEFLATE"):
        ServerSettings.from_env()
