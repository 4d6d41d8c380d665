"""`/ws` over a real uvicorn socket on 127.0.0.1 with the `websockets` client: fake engine and vLLM (CPU)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import pytest
import websockets

from yap_cli import client as yap_client
from yap_engines import FakeEngine

from .conftest import KEY, ack_for, check_turn_invariants, live_server


class SocketProbe:
    def __init__(self, connection: Any, session_id: str = "s1") -> None:
        self.connection = connection
        self.session_id = session_id
        self.frames: list[dict[str, Any]] = []
        self.turns: set[str] = set()

    async def send(self, kind: str, payload: dict[str, Any] | None = None, rid: str = "r", turn: bool = False) -> None:
        if turn:
            self.turns.add(rid)
        frame = {"type": kind, "session_id": self.session_id, "request_id": rid, "payload": payload or {}}
        await self.connection.send(json.dumps(frame))

    async def recv(self) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.connection.recv(), 30))
        self.frames.append(frame)
        return dict(frame)

    async def until_terminal(self, rid: str) -> list[dict[str, Any]]:
        got = []
        while True:
            frame = await self.recv()
            got.append(frame)
            if frame["type"] in ("done", "cancelled", "error") and frame["request_id"] == rid:
                return got


async def test_a_conversation_with_barge_in_and_cancel_over_a_real_socket() -> None:
    engine = FakeEngine(text="word " * 60, tokens_per_s=100)
    async with live_server(engine) as origin:
        async with websockets.connect(f"{origin}/ws", additional_headers={"X-API-Key": KEY}) as ws:
            probe = SocketProbe(ws)
            await probe.send("start", {"chat_prompt": "Be brief."}, "s0")
            assert (await probe.recv())["type"] == "ack"
            await probe.send("message", {"user_utterance": "one"}, "t1", turn=True)
            assert await probe.recv() == ack_for("s1", "t1", "message")
            assert (await probe.recv())["type"] == "token"
            await probe.send("message", {"user_utterance": "two"}, "t2", turn=True)
            assert (await probe.until_terminal("t1"))[-1]["payload"]["reason"] == "barge_in"
            assert await probe.recv() == ack_for("s1", "t2", "message")  # after the barged-in turn's end
            await probe.send("cancel", {"spoken_text": "word word"}, "t2")
            assert (await probe.until_terminal("t2"))[-1]["type"] == "cancelled"
            assert engine.num_unfinished_requests() == 0
            await probe.send("end", {}, "e")
            assert (await probe.recv())["type"] == "session_end"
            with pytest.raises(websockets.ConnectionClosedOK):
                await probe.recv()
        check_turn_invariants(probe.frames, probe.turns)


async def test_an_abrupt_disconnect_aborts_the_engine_request() -> None:
    engine = FakeEngine(text="word " * 100, tokens_per_s=50)
    async with live_server(engine) as origin:
        ws = await websockets.connect(f"{origin}/ws?api_key={KEY}")
        probe = SocketProbe(ws)
        await probe.send("start", {"chat_prompt": "Be brief.", "user_utterance": "talk"}, "t1")
        await probe.recv()
        assert (await probe.recv())["type"] == "token"
        ws.transport.abort()  # no close handshake, like a dropped network
        for _ in range(500):
            if engine.num_unfinished_requests() == 0:
                break
            await asyncio.sleep(0.01)
        assert engine.num_unfinished_requests() == 0


async def test_a_bad_frame_does_not_disturb_another_session() -> None:
    engine = FakeEngine(text="steady reply " * 10, tokens_per_s=200)
    async with live_server(engine) as origin:
        async with (
            websockets.connect(f"{origin}/ws?api_key={KEY}") as good,
            websockets.connect(f"{origin}/ws?api_key={KEY}") as bad,
        ):
            ok, noisy = SocketProbe(good, "good"), SocketProbe(bad, "bad")
            await ok.send("start", {"chat_prompt": "Be brief.", "user_utterance": "hi"}, "t1", turn=True)
            await noisy.connection.send("{{{ not json")
            await noisy.connection.send(b"\xff\xfe")
            assert (await noisy.recv())["payload"]["code"] == "invalid_message"
            assert (await noisy.recv())["payload"]["code"] == "invalid_message"
            frames = await ok.until_terminal("t1")
            assert frames[-1]["type"] == "done"
            check_turn_invariants(ok.frames, ok.turns)


async def test_a_wrong_key_closes_1008_over_a_real_socket() -> None:
    async with live_server(FakeEngine()) as origin:
        async with websockets.connect(f"{origin}/ws?api_key=nope") as ws:
            assert json.loads(await ws.recv())["payload"]["code"] == "authentication_failed"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def client_args(origin: str, command: str, *flags: str) -> argparse.Namespace:
    """`yap client COMMAND FLAGS` as the CLI parses it, pointed at `origin`."""
    server = ["--server", origin.replace("ws://", "http://"), "--key", KEY, "--json"]
    return yap_client.client_parser().parse_args(["client", command, *server, *flags])


async def test_the_yap_clients_against_a_live_server(capsys: pytest.CaptureFixture[str]) -> None:
    engine = FakeEngine(text="Sure. Here is a short answer for you.", tokens_per_s=500)
    async with live_server(engine, ws_idle_timeout_s=0.5) as origin:
        warm = await yap_client.warmup(client_args(origin, "warmup", "--double-ttfb"))
        assert warm["outcome"] == "done" and warm["ttfb_ms"] > 0 and warm["second_ttfb_ms"] > 0
        talk = await yap_client.conversation(client_args(origin, "conversation", "--turns", "4"))
        assert talk["outcomes"] == ["done"] * 4 and talk["ttfb_ms"]["p50"] > 0 and talk["sentence_ms"]["p95"] > 0
        cut = await yap_client.cancel(client_args(origin, "cancel", "--drain-timeout", "0.2"))
        assert cut["outcome"] == "cancelled" and cut["failures"] == []
        quiet = await yap_client.idle(
            client_args(
                origin, "idle", "--normal-wait", "0", "--idle-expect-seconds", "0.5", "--idle-grace-seconds", "2"
            )
        )
        assert quiet["close_code"] == 4000 and quiet["failures"] == []
        report = await yap_client.bench(client_args(origin, "bench", "-n", "6", "-c", "3"))
        assert report["completed"] == 6 and report["ttfb_ms"]["n"] == 6
    assert engine.num_unfinished_requests() == 0


def test_ws_url_accepts_origins_and_full_urls() -> None:
    assert yap_client.ws_url("http://h:8000", "k") == "ws://h:8000/ws?api_key=k"
    assert yap_client.ws_url("https://h", "k") == "wss://h/ws?api_key=k"
    assert yap_client.ws_url("ws://h:1/ws?x=1", "k") == "ws://h:1/ws?x=1&api_key=k"
    assert yap_client.ws_url("h:9", None) == "ws://h:9/ws"


@pytest.mark.vllm
async def test_the_demo_model_on_vllm_serves_a_turn_and_a_cancel(vllm_engine: Any) -> None:
    async with live_server(vllm_engine) as origin:
        async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:
            probe = SocketProbe(ws)
            await probe.send("start", {"chat_prompt": "Be brief.", "sampling": {"max_tokens": 12, "seed": 3}}, "s0")
            await probe.recv()
            await probe.send("message", {"user_utterance": "hello"}, "t1", turn=True)
            done = (await probe.until_terminal("t1"))[-1]
            assert done["type"] == "done"
            usage = done["payload"]["usage"]
            assert usage["completion_tokens"] <= 12 and usage["prompt_tokens"] > 5
            await probe.send("message", {"user_utterance": "again", "sampling": {"max_tokens": 150}}, "t2", turn=True)
            await probe.send("cancel", {}, "t2")
            assert (await probe.until_terminal("t2"))[-1]["type"] in ("cancelled", "done")
            assert vllm_engine.num_unfinished_requests() == 0
            check_turn_invariants(probe.frames, probe.turns)
