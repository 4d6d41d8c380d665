from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from starlette.testclient import TestClient

from yap_engines import EngineSettings, FakeEngine
from yap_engines.dtype import choose_dtype
from yap_server.app import create_app
from yap_server.settings import ServerSettings


def settings(**overrides: object) -> ServerSettings:
    values = {"text_api_key": "app-test-key", "max_concurrent_connections": 2, "deploy_mode": "chat", **overrides}
    return ServerSettings(**values)  # type: ignore[arg-type]


def test_the_lifespan_builds_the_engine_settings_ask_for() -> None:
    app = create_app(settings(), engine_settings=EngineSettings(engine="fake", fake_text="hi"))
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        body = client.get("/status", headers={"X-API-Key": "app-test-key"}).json()
        assert body["engines"] == {"chat": "fake"}


class DtypeFake(FakeEngine):
    """A fake that reports its weights dtype, as the vLLM and TensorRT-LLM engines do."""

    dtype_choice = choose_dtype("auto", accelerator=False, flags={"avx2"})


def test_status_shows_the_chosen_dtype_and_why() -> None:
    with TestClient(create_app(settings(), engines={"chat": DtypeFake()})) as client:
        body = client.get("/status", headers={"X-API-Key": "app-test-key"}).json()
    assert body["dtype"]["chat"]["dtype"] == "float32"
    assert "no native bfloat16" in body["dtype"]["chat"]["reason"]
    with TestClient(create_app(settings(), engines={"chat": FakeEngine()})) as client:
        assert client.get("/status", headers={"X-API-Key": "app-test-key"}).json()["dtype"] == {}


def test_injected_engines_belong_to_the_caller() -> None:
    chat = FakeEngine()
    with TestClient(create_app(settings(), engines={"chat": chat})):
        pass
    assert asyncio.run(chat.health()).ok


@pytest.mark.parametrize("missing", ["TEXT_API_KEY", "MAX_CONCURRENT_CONNECTIONS"])
def test_required_variables_fail_at_startup_naming_them(missing: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TEXT_API_KEY", "MAX_CONCURRENT_CONNECTIONS")}
    env.update({"TEXT_API_KEY": "app-test-key", "MAX_CONCURRENT_CONNECTIONS": "4"})
    del env[missing]
    out = subprocess.run(
        [sys.executable, "-m", "yap_cli", "serve", "--engine", "fake"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2
    assert missing in out.stderr


def test_an_empty_key_list_is_refused() -> None:
    from yap_engines.settings import SettingsError

    with pytest.raises(SettingsError, match="TEXT_API_KEY"):
        ServerSettings.from_env(text_api_key=" , ", max_concurrent_connections=1)


async def test_a_remote_engine_without_a_tokenizer_fails_at_startup_naming_the_setting() -> None:
    from yap_engines.adapters.openai import RemoteEngine

    remote = RemoteEngine("http://127.0.0.1:9")  # never contacted: start-up stops first
    settings = ServerSettings(text_api_key="app-test-key", max_concurrent_connections=1, deploy_mode="chat")
    try:
        with (
            pytest.raises(RuntimeError, match="YAP_OPENAI_TOKENIZER"),
            TestClient(create_app(settings, engines={"chat": remote})),
        ):
            pass
    finally:
        await remote.aclose()
