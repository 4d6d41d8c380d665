"""`/ws/completions` over a real uvicorn socket with the `websockets` client: vLLM (CPU) and the fake engine."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from cryptography.fernet import Fernet

from yap_cli.client_completions import completions_url, job_frame, run_job
from yap_engines import FakeEngine
from yap_engines.settings import SettingsError
from yap_server.crypto import ContentCipher
from yap_server.settings import ServerSettings

from .conftest import KEY, live_server

MESSAGES = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]
CHOICE = {"type": "choice", "choices": ["yes", "no"]}
SMALL = {"thinking_budget_low": 6, "thinking_budget_high": 4000, "final_max_tokens": 16}


def url(origin: str) -> str:
    return completions_url(origin, KEY)


async def recv(ws: Any) -> dict[str, Any]:
    """The next frame that is not a keepalive ping."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if frame.get("type") != "ping":
            return dict(frame)


async def until_running(engine: Any, count: int = 1) -> None:
    for _ in range(1000):
        if engine.num_unfinished_requests() >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} engine request(s) never started")


@pytest.mark.vllm
async def test_a_job_completes_on_vllm_with_usage_per_pass(vllm_engine: Any) -> None:
    async with live_server(vllm_engine, **SMALL) as origin:
        frame = job_frame(MESSAGES, "low", CHOICE, client_request_id="job-1", timeout_s=60)
        result = await run_job(url(origin), frame, None, 60)
    assert (result["status"], result["client_request_id"]) == ("completed", "job-1")
    body = result["result"]
    assert body["choices"][0]["message"]["content"] in ("yes", "no")
    passes = body["usage"]["passes"]
    assert [p["name"] for p in passes] == ["think", "draft", "check", "final"]
    assert all(p["completion_tokens"] <= 6 for p in passes if p["name"] in ("think", "check"))
    for key in ("prompt_tokens", "completion_tokens", "cached_tokens"):
        assert body["usage"][key] == sum(p[key] for p in passes)
    assert vllm_engine.num_unfinished_requests() == 0


async def test_cancel_aborts_the_running_pass() -> None:
    engine = FakeEngine(tokens_per_s=40)
    async with live_server(engine, **SMALL) as origin, websockets.connect(url(origin)) as ws:
        await ws.send(json.dumps(job_frame(MESSAGES, "high", CHOICE, client_request_id="long")))
        await until_running(engine)
        await ws.send(json.dumps({"type": "cancel", "client_request_id": "long"}))
        result = await recv(ws)
        assert (result["status"], result["client_request_id"]) == ("cancelled", "long")
        assert result["code"] == "cancelled"
        assert engine.num_unfinished_requests() == 0
        await ws.send(json.dumps({"type": "cancel", "client_request_id": "long"}))
        assert (await recv(ws))["code"] == "unknown_job"


async def test_a_disconnect_aborts_the_running_pass() -> None:
    engine = FakeEngine(tokens_per_s=40)
    async with live_server(engine, **SMALL) as origin:
        ws = await websockets.connect(url(origin))
        await ws.send(json.dumps(job_frame(MESSAGES, "high", CHOICE, client_request_id="gone")))
        await until_running(engine)
        ws.transport.abort()  # no close handshake, like a dropped network
        for _ in range(300):
            if engine.num_unfinished_requests() == 0:
                break
            await asyncio.sleep(0.01)
        assert engine.num_unfinished_requests() == 0


async def test_a_job_past_its_timeout_reports_timeout_and_aborts() -> None:
    engine = FakeEngine(tokens_per_s=40)
    async with live_server(engine, **SMALL) as origin, websockets.connect(url(origin)) as ws:
        await ws.send(json.dumps(job_frame(MESSAGES, "high", CHOICE, client_request_id="slow", timeout_s=0.3)))
        result = await recv(ws)
        assert (result["status"], result["code"]) == ("timeout", "timeout")
        assert engine.num_unfinished_requests() == 0


async def test_the_queue_is_bounded_per_connection_and_server_wide() -> None:
    engine = FakeEngine(tokens_per_s=40)
    limits = {"orch_max_concurrent_jobs": 1, "orch_max_queued_jobs": 1, "orch_max_jobs_per_connection": 2}
    async with live_server(engine, **SMALL, **limits) as origin:
        async with websockets.connect(url(origin)) as first, websockets.connect(url(origin)) as second:
            await first.send(json.dumps(job_frame(MESSAGES, "high", CHOICE, client_request_id="a")))
            await until_running(engine)
            await first.send(json.dumps(job_frame(MESSAGES, "high", CHOICE, client_request_id="b")))  # queued
            await first.send(json.dumps(job_frame(MESSAGES, "high", CHOICE, client_request_id="c")))
            refused = await recv(first)
            assert (refused["client_request_id"], refused["code"]) == ("c", "too_many_jobs")
            await second.send(json.dumps(job_frame(MESSAGES, "high", CHOICE, client_request_id="d")))
            full = await recv(second)
            assert (full["client_request_id"], full["code"]) == ("d", "queue_full")
            assert "ORCH_MAX_CONCURRENT_JOBS" in full["error"]
            assert engine.num_unfinished_requests() == 1  # only one job runs at a time
            await first.send(json.dumps({"type": "cancel"}))
            cancelled = {(await recv(first))["client_request_id"] for _ in range(2)}
            assert cancelled == {"a", "b"}
            await second.send(json.dumps(job_frame(MESSAGES, "none", CHOICE, client_request_id="e")))
            assert (await recv(second))["status"] == "completed"  # the queue has room again
        assert engine.num_unfinished_requests() == 0


async def test_keepalive_pings_and_closes_a_silent_client() -> None:
    keepalive = {"orch_ping_interval_s": 0.2, "orch_pong_timeout_s": 0.7}
    async with live_server(FakeEngine(), **keepalive) as origin, websockets.connect(url(origin)) as ws:
        for _ in range(6):  # 1.2 s of answering pings: longer than the pong timeout, still open
            assert json.loads(await asyncio.wait_for(ws.recv(), 2)) == {"type": "ping"}
            await ws.send(json.dumps({"type": "pong"}))
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}
        loop = asyncio.get_running_loop()
        silent_since = loop.time()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 3)  # pings keep coming; we stop answering
        assert 0.5 <= loop.time() - silent_since <= 2.0
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


async def test_encrypted_round_trip_and_an_undecryptable_message() -> None:
    key = Fernet.generate_key().decode()
    cipher = ContentCipher(key)
    async with live_server(FakeEngine(), orch_encryption_key=key, **SMALL) as origin:
        async with websockets.connect(url(origin)) as ws:
            await ws.send(json.dumps(job_frame(MESSAGES, "low", CHOICE, cipher=cipher, client_request_id="enc")))
            raw = await recv(ws)
            message = raw["result"]["choices"][0]["message"]
            assert raw["result"]["encrypted"] and message["content"] not in ("yes", "no")
            assert cipher.decrypt(message["content"], "content") in ("yes", "no")
            assert "Wait, have I made a mistake?" in cipher.decrypt(message["thinking"], "thinking")

            await ws.send(json.dumps(job_frame(MESSAGES, "low", CHOICE, client_request_id="plain")))
            bad = await recv(ws)
            assert (bad["client_request_id"], bad["status"], bad["code"]) == (
                "plain",
                "error",
                "decryption_failed",
            )
            assert "messages[0].content" in bad["error"]
        # the client encrypts and decrypts on its own
        result = await run_job(url(origin), job_frame(MESSAGES, "none", CHOICE, cipher=cipher), cipher, 20)
        assert result["result"]["choices"][0]["message"]["content"] in ("yes", "no")


async def test_bad_frames_get_errors_and_the_connection_stays_open() -> None:
    async with live_server(FakeEngine(), **SMALL) as origin, websockets.connect(url(origin)) as ws:
        await ws.send("not json")
        assert (await recv(ws))["code"] == "invalid_message"
        await ws.send(json.dumps({"type": "dance"}))
        assert (await recv(ws))["code"] == "unknown_type"
        await ws.send(json.dumps({"client_request_id": "x", "request": {"messages": [], "thinking_effort": "max"}}))
        bad = await recv(ws)
        assert bad["client_request_id"] == "x" and bad["code"] == "invalid_request"
        assert "messages" in bad["error"] and "thinking_effort" in bad["error"]
        frame = job_frame(MESSAGES, "none", {"type": "choice", "choices": []}, client_request_id="y")
        assert "non-empty" in (await recv_after(ws, frame))["error"]
        frame = job_frame(MESSAGES, "none", CHOICE, max_tokens=17, client_request_id="z")
        assert (await recv_after(ws, frame))["error"].startswith("max_tokens 17 is out of range [1, 16]")
        assert (await recv_after(ws, job_frame(MESSAGES, "none", CHOICE)))["status"] == "completed"


async def recv_after(ws: Any, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(frame))
    return await recv(ws)


async def test_a_missing_key_is_refused() -> None:
    async with live_server(FakeEngine()) as origin, websockets.connect(completions_url(origin, None)) as ws:
        assert (await recv(ws))["code"] == "authentication_failed"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [("orch_encryption_key", "not-a-key", "ORCH_ENCRYPTION_KEY"), ("final_max_tokens", 0, "FINAL_MAX_TOKENS")],
)
def test_bad_settings_fail_at_startup_naming_the_variable(field: str, value: Any, variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        ServerSettings.from_env(text_api_key=KEY, max_concurrent_connections=1, **{field: value})


# -- seed 002 wire compatibility -----------------------------------------------------------------

SEED_MODEL = "Qwen/Qwen3-VL-4B-Thinking"


def seed_request(model: str, content: str, rid: str) -> dict[str, Any]:
    """A job exactly as seed 002 documents it (`request.model` included)."""
    return {
        "request": {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "thinking_effort": "medium",
            "response_format": {"type": "json_object"},
        },
        "client_request_id": rid,
        "timeout_seconds": 120,
    }


async def test_seed_002_request_and_reply_shapes() -> None:
    key = Fernet.generate_key().decode()
    cipher = ContentCipher(key)
    served = {"served_model_name": SEED_MODEL, "orch_encryption_key": key, **SMALL}
    async with live_server(FakeEngine(), **served) as origin, websockets.connect(url(origin)) as ws:
        await ws.send(json.dumps(seed_request(SEED_MODEL, cipher.encrypt("Say hi as JSON."), "seed-ok")))
        done = await recv(ws)
        assert (done["status"], done["client_request_id"]) == ("completed", "seed-ok")
        message = done["result"]["choices"][0]["message"]
        assert isinstance(json.loads(cipher.decrypt(message["content"], "content")), dict)
        assert cipher.decrypt(message["thinking"], "thinking")

        await ws.send(json.dumps(seed_request("some/other-model", cipher.encrypt("hi"), "seed-wrong-model")))
        refused = await recv(ws)
        assert (refused["status"], refused["code"], refused["client_request_id"]) == (
            "error",
            "model_not_found",
            "seed-wrong-model",
        )
        assert isinstance(refused["error"], str)  # seed 002: "error" is the message itself
        assert SEED_MODEL in refused["error"] and "some/other-model" in refused["error"]

        timed_out = seed_request(SEED_MODEL, cipher.encrypt("hi"), "seed-timeout")
        timed_out["timeout_seconds"] = 0.001
        await ws.send(json.dumps(timed_out))
        late = await recv(ws)
        assert (late["status"], late["code"]) == ("timeout", "timeout") and "timeout_seconds" in late["error"]


@pytest.mark.parametrize("text_api_key", [KEY, None])
async def test_orch_api_key_is_accepted(text_api_key: str | None) -> None:
    """seed 002's `ORCH_API_KEY` opens `/ws/completions`, beside `TEXT_API_KEY` or on its own."""
    async with live_server(FakeEngine(), text_api_key=text_api_key, orch_api_key="orch-key", **SMALL) as origin:
        result = await run_job(completions_url(origin, "orch-key"), job_frame(MESSAGES, "none", CHOICE), None, 20)
        assert result["status"] == "completed"
        async with websockets.connect(completions_url(origin, "wrong-key")) as ws:
            assert (await recv(ws))["code"] == "authentication_failed"


def test_a_server_with_no_key_at_all_fails_at_startup_naming_both_variables() -> None:
    with pytest.raises(SettingsError, match=r"TEXT_API_KEY.*ORCH_API_KEY"):
        ServerSettings.from_env(text_api_key=None, max_concurrent_connections=1)
