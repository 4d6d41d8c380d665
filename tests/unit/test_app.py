from __future__ import annotations

import asyncio

from starlette.testclient import TestClient

from yap_engines import FakeEngine
from yap_server.app import create_app
from yap_server.settings import ServerSettings


def test_healthz_is_ok_while_every_engine_is_healthy() -> None:
    chat = FakeEngine()
    with TestClient(create_app(ServerSettings(), engines={"chat": chat})) as client:
        response = client.get("/healthz")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})
        chat.kill("out of memory")
        response = client.get("/healthz")
        assert response.status_code == 503
        assert "out of memory" in response.json()["failing"]["chat"]


def test_the_lifespan_closes_the_engines() -> None:
    chat = FakeEngine()
    with TestClient(create_app(ServerSettings(), engines={"chat": chat})):
        pass
    health = asyncio.run(chat.health())
    assert not health.ok and "closed" in health.detail
