"""Yap as the session edge in front of a remote OpenAI-compatible engine (here: a second Yap on loopback).

The edge keeps the session (history, barge-in, cancel); the upstream only generates. Both servers are real
uvicorn servers; the edge reaches the upstream through `RemoteEngine` over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import websockets

from yap_engines import FakeEngine
from yap_engines.adapters.fake import FakeTokenizer
from yap_engines.adapters.openai import RemoteEngine

from .conftest import KEY, RecordingFake, check_turn_invariants, live_server
from .test_ws_socket import SocketProbe


@contextlib.asynccontextmanager
async def edge_over(upstream_engine: FakeEngine) -> AsyncIterator[tuple[str, RemoteEngine]]:
    """An upstream Yap serving `upstream_engine`, and an edge Yap whose chat engine is a `RemoteEngine` on it."""
    async with live_server(upstream_engine) as upstream:
        remote = RemoteEngine(upstream.replace("ws://", "http://"), api_key=KEY, model=None, tokenizer=FakeTokenizer())
        try:
            async with live_server(remote) as edge:
                yield edge, remote
        finally:
            await remote.aclose()


async def test_a_conversation_through_the_edge_keeps_history_and_the_session_header() -> None:
    upstream = RecordingFake(script=["Hello there.", "Paris, of course."], tokens_per_s=0)
    async with edge_over(upstream) as (edge, _):
        async with websockets.connect(f"{edge}/ws", additional_headers={"X-API-Key": KEY}) as ws:
            probe = SocketProbe(ws, session_id="sess-42")
            await probe.send("start", {"chat_prompt": "Be brief."}, "s0")
            assert (await probe.recv())["type"] == "ack"
            texts = []
            for rid, utterance in (("t1", "hi"), ("t2", "capital of France?")):
                await probe.send("message", {"user_utterance": utterance}, rid, turn=True)
                frames = await probe.until_terminal(rid)
                assert frames[-1]["type"] == "done", frames[-1]
                texts.append("".join(f["payload"]["text"] for f in frames if f["type"] == "token"))
        check_turn_invariants(probe.frames, probe.turns)
    assert texts == ["Hello there.", "Paris, of course."]
    last = upstream.requests[-1]
    contents = [(m["role"], m["content"]) for m in last.messages]
    # the edge sent the whole conversation as messages, the first reply included
    assert ("user", "hi") in contents and ("assistant", "Hello there.") in contents
    assert contents[-1] == ("user", "capital of France?")
    assert last.session_id == "sess-42"  # the edge's session id reached the upstream (sticky routing)


async def test_a_cancel_at_the_edge_aborts_the_upstream_request() -> None:
    upstream = RecordingFake(text="word " * 200, tokens_per_s=40)
    async with edge_over(upstream) as (edge, remote):
        async with websockets.connect(f"{edge}/ws", additional_headers={"X-API-Key": KEY}) as ws:
            probe = SocketProbe(ws)
            await probe.send("start", {"chat_prompt": "Be brief.", "user_utterance": "talk"}, "t1", turn=True)
            assert (await probe.recv())["type"] == "ack"
            assert (await probe.recv())["type"] == "token"
            assert upstream.num_unfinished_requests() == 1
            await probe.send("cancel", {}, "t1")
            assert (await probe.until_terminal("t1"))[-1]["type"] == "cancelled"
            for _ in range(300):
                if upstream.num_unfinished_requests() == 0 and remote.num_unfinished_requests() == 0:
                    break
                await asyncio.sleep(0.01)
        check_turn_invariants(probe.frames, probe.turns)
    assert upstream.num_unfinished_requests() == 0
    assert remote.num_unfinished_requests() == 0
