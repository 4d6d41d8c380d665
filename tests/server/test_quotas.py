"""Per-key quotas over a real socket: the key registry file (hot reload, revoke), requests and tokens per
minute (reserved at admission, refunded at the end), sessions, and the refusal of every route: HTTP 429
with `Retry-After` and the rate-limit headers, `/ws` and `/ws/completions` `rate_limited` errors, the
Responses `rate_limit_exceeded` event. The engine never sees a refused request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from yap_cli.keys import register
from yap_cli.loopback import serve_on_loopback
from yap_engines import EngineSettings
from yap_engines.settings import SettingsError
from yap_server import quotas
from yap_server.app import create_app
from yap_server.keys import ApiKey, KeyEntry, KeyLimits, KeyRegistry, hash_secret, write_keys_file

from .conftest import KEY, RecordingFake, server_settings
from .test_streaming_core import StubClassifier

SECRET = "mobile-app-secret-0123456789"


def keys_file(tmp_path: Path, **limits: int) -> Path:
    path = tmp_path / "keys.toml"
    write_keys_file(path, [KeyEntry(ApiKey("mobile-app", KeyLimits(**limits)), hash_secret(SECRET))])
    return path


@contextlib.asynccontextmanager
async def served(path: Path, engine: RecordingFake | None = None, **overrides: Any) -> AsyncIterator[str]:
    values = {"keys_file": path, "max_concurrent_connections": 64, **overrides}
    engine = engine or RecordingFake(seed=1)
    engine_settings = EngineSettings(chat_max_out=values.pop("chat_max_out", 150))
    app = create_app(server_settings(**values), engines={"chat": engine}, engine_settings=engine_settings)
    async with serve_on_loopback(app) as port:
        yield f"http://127.0.0.1:{port}"


def chat_body(max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens, **extra}


async def post(http: httpx.AsyncClient, secret: str = SECRET, **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"}
    return await http.post("/v1/chat/completions", json=chat_body(**body), headers=headers)


def check_refusal_headers(response: httpx.Response, kind: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == kind
    assert int(response.headers["retry-after"]) >= 1
    assert "ratelimit-policy" in response.headers and "ratelimit" in response.headers


# -- the registry --------------------------------------------------------------------------------


def test_registry_reads_toml_and_json_and_names_a_bad_file(tmp_path: Path) -> None:
    toml_path = keys_file(tmp_path, rpm=5, tpm=100)
    assert "mobile-app" in toml_path.read_text() and SECRET not in toml_path.read_text()
    registry = KeyRegistry([KEY], toml_path)
    assert registry.identify(SECRET) == ApiKey("mobile-app", KeyLimits(rpm=5, tpm=100))
    assert registry.identify(KEY) == ApiKey("env-1") and registry.identify("nope") is None
    json_path = tmp_path / "keys.json"
    json_path.write_text(json.dumps({"keys": [{"id": "web-app", "hash": hash_secret("b"), "sessions": 2}]}))
    assert KeyRegistry([], json_path).identify("b") == ApiKey("web-app", KeyLimits(sessions=2))
    json_path.write_text(json.dumps({"keys": [{"id": "web-app", "hash": hash_secret("b"), "rpm": -1}]}))
    with pytest.raises(SettingsError, match=r"YAP_KEYS_FILE=.*rpm must be a whole number"):
        KeyRegistry([], json_path)


def test_a_keys_file_stands_in_for_text_api_key(tmp_path: Path) -> None:
    settings = server_settings(text_api_key=None, keys_file=keys_file(tmp_path))
    assert settings.api_keys == ()
    with pytest.raises(ValueError, match="YAP_KEYS_FILE"):
        server_settings(text_api_key=None)


def test_cli_adds_lists_and_revokes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="yap")
    register(parser.add_subparsers(dest="command"))
    path = tmp_path / "k.toml"

    def run(*argv: str) -> str:
        args = parser.parse_args(["keys", *argv, "--file", str(path)])
        assert args.run(args) == 0
        return capsys.readouterr().out

    secret = run("add", "batch-jobs", "--rpm", "7", "--daily-tokens", "900").splitlines()[-1]
    assert secret.startswith("yap-") and secret not in path.read_text()
    assert KeyRegistry([], path).identify(secret) == ApiKey("batch-jobs", KeyLimits(rpm=7, daily_tokens=900))
    listing = run("list")
    assert "batch-jobs" in listing and "900" in listing and secret not in listing
    run("revoke", "batch-jobs")
    assert KeyRegistry([], path).identify(secret) is None
    with pytest.raises(SettingsError, match="no key named 'batch-jobs'"):
        run("revoke", "batch-jobs")


async def test_the_file_is_reread_without_a_restart(tmp_path: Path) -> None:
    path = keys_file(tmp_path)
    async with served(path) as origin, httpx.AsyncClient(base_url=origin) as http:
        assert (await post(http)).status_code == 200
        write_keys_file(
            path, [KeyEntry(ApiKey("support-bot"), hash_secret("support-bot-secret"))]
        )  # mobile-app revoked, support-bot added
        deadline = time.monotonic() + 10
        while (await post(http)).status_code != 401:
            assert time.monotonic() < deadline, "the revoked key is still accepted"
            await asyncio.sleep(0.2)
        assert (await post(http, secret="support-bot-secret")).status_code == 200
        outcome = await ws_refusal(origin, "/ws", SECRET)
        assert outcome == ("closed", 1008)  # revoked on the WebSocket routes too
        assert (await http.get("/metrics", headers={"X-API-Key": "support-bot-secret"})).status_code == 200


# -- HTTP ----------------------------------------------------------------------------------------


async def test_requests_per_minute_admit_exactly_the_limit(tmp_path: Path) -> None:
    engine = RecordingFake(seed=1)
    async with served(keys_file(tmp_path, rpm=50), engine) as origin:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=origin, limits=limits, timeout=60) as http:
            answers = await asyncio.gather(*(post(http, max_tokens=2) for _ in range(200)))
            codes = [answer.status_code for answer in answers]
            assert codes.count(200) == 50 and codes.count(429) == 150
            assert len(engine.requests) == 50  # the engine never saw a refused request
            check_refusal_headers(next(a for a in answers if a.status_code == 429), "requests")
            admitted = next(a for a in answers if a.status_code == 200)
            assert admitted.headers["x-ratelimit-limit-requests"] == "50"
            assert 0 <= int(admitted.headers["x-ratelimit-remaining-requests"]) < 50
            assert admitted.headers["x-ratelimit-reset-requests"].endswith("s")
            metrics = (await http.get("/metrics", headers={"X-API-Key": SECRET})).text
    assert 'yap_key_requests_total{key_id="mobile-app",outcome="admitted"} 50.0' in metrics
    assert 'yap_key_refusals_total{key_id="mobile-app",kind="requests"} 150.0' in metrics
    assert 'yap_key_tokens_total{key_id="mobile-app",kind="completion"}' in metrics and SECRET not in metrics


async def test_tokens_are_reserved_up_front_and_refunded(tmp_path: Path) -> None:
    engine = RecordingFake(seed=1, tokens_per_s=40)  # slow enough that all four are in flight together
    async with served(keys_file(tmp_path, tpm=1000), engine, chat_max_out=300) as origin:
        async with httpx.AsyncClient(base_url=origin, timeout=60) as http:
            answers = await asyncio.gather(*(post(http, max_tokens=300) for _ in range(4)))
            codes = sorted(answer.status_code for answer in answers)
            assert codes == [200, 200, 200, 429], [a.text for a in answers]
            assert len(engine.requests) == 3
            refused = next(a for a in answers if a.status_code == 429)
            check_refusal_headers(refused, "tokens")
            assert refused.headers["x-ratelimit-limit-tokens"] == "1000"
            # the three replies used far fewer than the 300 tokens each reserved: the rest came back
            assert (await post(http, max_tokens=300)).status_code == 200
            assert (await post(http, max_tokens=301)).status_code == 400  # over CHAT_MAX_OUT: not a quota


async def test_a_client_that_waits_retry_after_gets_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quotas, "MINUTE_S", 2)  # a two-second "minute" keeps the test short
    async with served(keys_file(tmp_path, rpm=2)) as origin, httpx.AsyncClient(base_url=origin) as http:
        assert [(await post(http)).status_code for _ in range(2)] == [200, 200]
        refused = await post(http)
        check_refusal_headers(refused, "requests")
        await asyncio.sleep(float(refused.headers["retry-after"]))
        assert (await post(http)).status_code == 200


# -- WebSockets ----------------------------------------------------------------------------------


async def ws_refusal(origin: str, path: str, secret: str) -> tuple[str, Any]:
    url = origin.replace("http://", "ws://") + path
    try:
        async with websockets.connect(url, additional_headers={"X-API-Key": secret}) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.recv()
                await ws.recv()
            return "closed", ws.close_code
    except InvalidStatus as exc:
        return "refused", exc.response


async def test_a_handshake_over_the_session_limit_gets_429(tmp_path: Path) -> None:
    async with served(keys_file(tmp_path, sessions=1)) as origin:
        url = origin.replace("http://", "ws://")
        async with websockets.connect(url + "/ws", additional_headers={"X-API-Key": SECRET}):
            for path in ("/ws", "/ws/completions", "/v1/responses"):
                outcome, response = await ws_refusal(origin, path, SECRET)
                assert outcome == "refused" and response.status_code == 429
                assert int(response.headers["Retry-After"]) >= 1
                assert json.loads(response.body)["error"]["code"] == "rate_limited"
        for _ in range(50):  # the closed session is given back
            with contextlib.suppress(InvalidStatus):
                async with websockets.connect(url + "/ws", additional_headers={"X-API-Key": SECRET}):
                    return
            await asyncio.sleep(0.1)
        pytest.fail("the session was not given back")


async def test_every_websocket_route_refuses_in_session(tmp_path: Path) -> None:
    engine = RecordingFake(seed=1)
    async with served(keys_file(tmp_path, tpm=60), engine, chat_max_out=100) as origin:
        url = origin.replace("http://", "ws://")
        headers = {"X-API-Key": SECRET}
        async with websockets.connect(url + "/ws", additional_headers=headers) as ws:
            start = {"type": "start", "session_id": "s", "request_id": "r0", "payload": {"chat_prompt": "Be brief."}}
            await ws.send(json.dumps(start))
            payload = {"user_utterance": "hi", "sampling": {"max_tokens": 100}}
            message = {"type": "message", "session_id": "s", "request_id": "r1", "payload": payload}
            await ws.send(json.dumps(message))
            frame = await next_of(ws, lambda f: f["type"] == "error")
            assert frame["payload"]["code"] == "rate_limited" and frame["payload"]["limit"] == "tokens"
            assert frame["payload"]["retry_after_s"] > 0 and frame["payload"]["remaining"] == 60
        async with websockets.connect(url + "/v1/responses", additional_headers=headers) as ws:
            create = {"type": "response.create", "model": "fake", "input": "hi", "max_output_tokens": 100}
            await ws.send(json.dumps(create))
            error = await next_of(ws, lambda f: f["type"] == "error")
            assert error["code"] == "rate_limit_exceeded" and error["retry_after_s"] > 0
            failed = await next_of(ws, lambda f: f["type"].startswith("response.") and f["type"] != "response.created")
            assert failed["type"] == "response.failed"
            assert failed["response"]["error"]["code"] == "rate_limit_exceeded"
        async with websockets.connect(url + "/ws/completions", additional_headers=headers) as ws:
            request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
            await ws.send(json.dumps({"type": "completion", "client_request_id": "j1", "request": request}))
            result = await next_of(ws, lambda f: f.get("client_request_id") == "j1" and "status" in f)
            assert result["status"] == "error" and result["code"] == "rate_limited" and result["retry_after_s"] > 0
    assert engine.requests == []  # the engine saw none of them


class AskedClassifier(StubClassifier):
    """Records each utterance when it is asked about, before its classification starts running."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def classify(self, history: Any, utterance: str) -> Any:  # type: ignore[override]
        self.asked.append(utterance)
        return super().classify(history, utterance)


def with_classifier(tmp_path: Path, engine: RecordingFake, classifier: StubClassifier) -> Any:
    """An app deploying both parts, for a key of 300 tokens per minute (a reply of 400 can never fit)."""
    settings = server_settings(keys_file=keys_file(tmp_path, tpm=300), deploy_mode="both", max_concurrent_connections=8)
    engine_settings = EngineSettings(chat_max_out=400)
    return create_app(settings, engines={"chat": engine, "tool": classifier}, engine_settings=engine_settings)


async def test_a_refused_ws_turn_is_refused_before_the_classifier(tmp_path: Path) -> None:
    """A `/ws` turn its key's quota refuses gets its ack and its `rate_limited` error, nothing between (no
    `toolcall`): neither the classifier nor the engine saw it, its utterance left history, and the session's
    next turn runs as usual."""
    engine, classifier = RecordingFake(seed=1), AskedClassifier()
    async with serve_on_loopback(with_classifier(tmp_path, engine, classifier)) as port:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", additional_headers={"X-API-Key": SECRET}) as ws:

            async def turn(rid: str, **payload: Any) -> list[dict[str, Any]]:
                await ws.send(json.dumps({"type": "message", "session_id": "s", "request_id": rid, "payload": payload}))
                frames = [await next_of(ws, lambda f: f.get("request_id") == rid)]
                while frames[-1]["type"] not in ("done", "cancelled", "error"):
                    frames.append(await next_of(ws, lambda f: f.get("request_id") == rid))
                return frames

            start = {"type": "start", "session_id": "s", "request_id": "r0", "payload": {"chat_prompt": "Be brief."}}
            await ws.send(json.dumps(start))
            refused = await turn("r1", user_utterance="what is on my screen?", sampling={"max_tokens": 400})
            admitted = await turn("r2", user_utterance="tell me a joke", sampling={"max_tokens": 8})
    assert [f["type"] for f in refused] == ["ack", "error"], refused
    assert refused[-1]["payload"]["code"] == "rate_limited" and refused[-1]["payload"]["limit"] == "tokens"
    assert [f["type"] for f in admitted][:2] == ["ack", "toolcall"] and admitted[-1]["type"] == "done", admitted
    assert classifier.asked == ["tell me a joke"]  # never asked about the refused turn
    assert len(engine.requests) == 1
    said = [m["content"] for m in engine.requests[0].messages or [] if m["role"] == "user"]
    assert said == ["tell me a joke"]  # the refused utterance is not in the next turn's history


async def test_a_tool_only_turn_counts_against_the_keys_requests(tmp_path: Path) -> None:
    """With only the classifier deployed a turn is still a request of its key: past `rpm` it gets its
    `rate_limited` error (limit `requests`) and the classifier is not asked."""
    classifier = AskedClassifier()
    settings = server_settings(keys_file=keys_file(tmp_path, rpm=1), deploy_mode="tool", max_concurrent_connections=8)
    async with serve_on_loopback(create_app(settings, engines={"tool": classifier})) as port:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", additional_headers={"X-API-Key": SECRET}) as ws:
            start = {"type": "start", "session_id": "s", "request_id": "r0", "payload": {}}
            await ws.send(json.dumps(start))
            turns = []
            for rid, text in (("r1", "what is on my screen?"), ("r2", "and now?")):
                await ws.send(
                    json.dumps(
                        {"type": "message", "session_id": "s", "request_id": rid, "payload": {"user_utterance": text}}
                    )
                )
                frames = [await next_of(ws, lambda f, rid=rid: f.get("request_id") == rid)]
                while frames[-1]["type"] not in ("done", "cancelled", "error"):
                    frames.append(await next_of(ws, lambda f, rid=rid: f.get("request_id") == rid))
                turns.append(frames)
    assert [f["type"] for f in turns[0]] == ["ack", "toolcall", "done"], turns[0]
    assert [f["type"] for f in turns[1]] == ["ack", "error"], turns[1]
    assert turns[1][-1]["payload"]["code"] == "rate_limited" and turns[1][-1]["payload"]["limit"] == "requests"
    assert classifier.asked == ["what is on my screen?"]


async def test_a_refused_response_is_refused_before_the_classifier(tmp_path: Path) -> None:
    """The same on `/v1/responses`: a refused response is `response.created`, the `rate_limit_exceeded` error
    and `response.failed`, with neither the classifier nor the engine called; the next response runs."""
    engine, classifier = RecordingFake(seed=1), AskedClassifier()
    tools = [{"type": "function", "name": "take_screenshot", "parameters": {"type": "object", "properties": {}}}]
    async with serve_on_loopback(with_classifier(tmp_path, engine, classifier)) as port:
        url = f"ws://127.0.0.1:{port}/v1/responses"
        async with websockets.connect(url, additional_headers={"X-API-Key": SECRET}) as ws:

            async def respond(text: str, max_output_tokens: int) -> list[dict[str, Any]]:
                create = {"type": "response.create", "model": "fake", "input": text, "tools": tools}
                await ws.send(json.dumps({**create, "max_output_tokens": max_output_tokens}))
                events = [await next_of(ws, lambda f: True)]
                while events[-1]["type"] not in ("response.completed", "response.failed", "response.incomplete"):
                    events.append(await next_of(ws, lambda f: True))
                return events

            refused = await respond("what is on my screen?", 400)
            admitted = await respond("tell me a joke", 8)
    assert [e["type"] for e in refused] == ["response.created", "error", "response.failed"], refused
    assert refused[1]["code"] == "rate_limit_exceeded"
    assert admitted[-1]["type"] in ("response.completed", "response.incomplete"), admitted
    assert classifier.asked == ["tell me a joke"] and len(engine.requests) == 1


async def next_of(ws: Any, wanted: Any) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            frame = json.loads(await ws.recv())
            if wanted(frame):
                return dict(frame)
