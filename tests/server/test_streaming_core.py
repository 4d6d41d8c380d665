"""The streaming core over a real socket: every route on the one WebSocket runtime and the one generation
pipeline, in every `DEPLOY_MODE`, on FakeEngine (and the chat routes on the demo model on vLLM CPU).

Each route: served or refused with its documented error; exactly one terminal frame per turn; the slot
and the engine request freed after cancel, disconnect and a slow consumer; the banned phrases of
`CHAT_LOGIT_BIAS_FILE` reach every request; a failing classifier answers `no` everywhere.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from yap_engines import ChatRequest, EngineHealth, FakeEngine, FunctionEngine, InferenceEngine
from yap_engines.tool import ToolDecision

from .conftest import KEY, RecordingFake, ack_for, check_turn_invariants, live_server

SCREEN = "can you look at my screen?"
TOOLS = [{"type": "function", "name": "take_screenshot", "parameters": {"type": "object", "properties": {}}}]
RESPONSE_TERMINAL = ("response.completed", "response.incomplete", "response.failed")
MODES = ("both", "chat", "tool")


class StubClassifier:
    """The tool classifier's contract: yes when the utterance mentions the screen; `fail` makes it raise."""

    name = "tool"
    model_id = "stub-classifier"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[str] = []

    async def classify(self, history: Sequence[str], utterance: str) -> ToolDecision:
        self.calls.append(utterance)
        if self.fail:
            raise RuntimeError("classifier crashed")
        yes = "screen" in utterance
        return ToolDecision("yes" if yes else "no", 0.9 if yes else 0.1, "take_screenshot" if yes else "none", 1.0)

    async def health(self) -> EngineHealth:
        return EngineHealth(True, "stub")

    async def aclose(self) -> None:
        return None


def http_origin(origin: str) -> str:
    return origin.replace("ws://", "http://")


async def recv_json(ws: Any, wait_s: float = 20) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), wait_s)))


def envelope(kind: str, rid: str, **payload: Any) -> str:
    return json.dumps({"type": kind, "session_id": "s1", "request_id": rid, "payload": payload})


async def ws_turn(origin: str, utterance: str = SCREEN, kind: str = "message") -> list[dict[str, Any]]:
    """A `/ws` session: start, then one turn (`message` or `followup`); the turn's frames after its `ack`
    (which must come first), checked."""
    async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:
        await ws.send(envelope("start", "s0", chat_prompt="Be brief."))
        assert (await recv_json(ws))["type"] == "ack"
        field = "analysis_text" if kind == "followup" else "user_utterance"
        await ws.send(envelope(kind, "t1", **{field: utterance}))
        frames = []
        while True:
            frame = await recv_json(ws)
            frames.append(frame)
            if frame["request_id"] == "t1" and frame["type"] in ("done", "cancelled", "error"):
                check_turn_invariants(frames, {"t1"})
                assert frames[0] == ack_for("s1", "t1", kind), frames
                return frames[1:]


async def respond(origin: str, **params: Any) -> list[dict[str, Any]]:
    """One `/v1/responses` response: its events up to exactly one terminal event (or a lone error)."""
    async with websockets.connect(
        f"{origin}/v1/responses", additional_headers={"Authorization": f"Bearer {KEY}"}
    ) as ws:
        await ws.send(json.dumps({"type": "response.create", "model": "yap", **params}))
        events = []
        while True:
            event = await recv_json(ws)
            events.append(event)
            if event["type"] in RESPONSE_TERMINAL or (event["type"] == "error" and len(events) == 1):
                assert sum(e["type"] in RESPONSE_TERMINAL for e in events) <= 1
                return events


async def job(origin: str, **request: Any) -> dict[str, Any]:
    """One `/ws/completions` job (thinking effort none): its one result frame."""
    async with websockets.connect(f"{origin}/ws/completions?api_key={KEY}") as ws:
        body = {"messages": [{"role": "user", "content": "hi"}], "thinking_effort": "none", **request}
        await ws.send(json.dumps({"request": body, "client_request_id": "j1"}))
        while (frame := await recv_json(ws))["type"] != "result":
            pass
        return frame


async def chat_completion(origin: str, stream: bool) -> httpx.Response:
    async with httpx.AsyncClient(base_url=http_origin(origin), headers={"X-API-Key": KEY}, timeout=20) as http:
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        return await http.post("/v1/chat/completions", json=body)


async def settled(origin: str, engine: Any) -> tuple[int, int]:
    """Wait until no connection holds a slot and the engine runs nothing; (slots held, requests running)."""
    async with httpx.AsyncClient(base_url=http_origin(origin), headers={"X-API-Key": KEY}) as http:
        for _ in range(200):
            slots = (await http.get("/status")).json()["active_connections"]
            if not slots and not engine.num_unfinished_requests():
                break
            await asyncio.sleep(0.05)
    return slots, engine.num_unfinished_requests()


async def until_running(engine: Any) -> None:
    for _ in range(1000):
        if engine.num_unfinished_requests():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the engine request never started")


@pytest.fixture
def chat() -> FakeEngine:
    return FakeEngine(text="Sure, here you go.", tokens_per_s=400)


# -- the six defects -------------------------------------------------------------------------------


async def test_tool_mode_without_a_chat_engine_answers_toolcall_then_done() -> None:
    async with live_server(FakeEngine(), {"tool": StubClassifier()}, deploy_mode="tool") as origin:
        frames = await ws_turn(origin)
    assert [f["type"] for f in frames] == ["toolcall", "done"]
    expected = {"status": "yes", "score": 0.9, "raw": [{"name": "take_screenshot"}], "label": "take_screenshot"}
    assert frames[0]["payload"] == expected


async def test_a_followup_is_chat_only_and_never_runs_the_classifier(chat: FakeEngine) -> None:
    classifier = StubClassifier()
    async with live_server(chat, {"chat": chat, "tool": classifier}, deploy_mode="both") as origin:
        frames = await ws_turn(origin, "a spreadsheet on the screen", kind="followup")
    assert "toolcall" not in [f["type"] for f in frames] and frames[-1]["type"] == "done"
    assert classifier.calls == []


async def test_a_failing_classifier_answers_no_on_ws_and_on_responses(chat: FakeEngine) -> None:
    async with live_server(chat, {"chat": chat, "tool": StubClassifier(fail=True)}, deploy_mode="both") as origin:
        frames = await ws_turn(origin)
        events = await respond(origin, input=[{"role": "user", "content": SCREEN}], tools=TOOLS)
    assert frames[0]["type"] == "toolcall" and frames[0]["payload"]["status"] == "no"
    assert frames[0]["payload"]["raw"] == [] and frames[0]["payload"]["label"] == "error"
    assert frames[-1]["payload"]["text"] == "Sure, here you go."
    final = events[-1]
    assert final["type"] == "response.completed", final
    assert [item["type"] for item in final["response"]["output"]] == ["message"]
    assert chat.num_unfinished_requests() == 0


def _flood(request: ChatRequest) -> AsyncIterator[str]:
    async def pieces() -> AsyncIterator[str]:
        while True:
            yield "x" * 65535 + " "

    return pieces()


@pytest.mark.parametrize("route", ["/ws", "/v1/responses", "/ws/completions"])
async def test_a_slow_consumer_is_dropped_on_every_websocket_route(route: str) -> None:
    engine = FunctionEngine(_flood)
    settings = {"ws_send_timeout_s": 0.5, "chat_max_out": 10**9, "final_max_tokens": 256}
    async with live_server(engine, **settings) as origin:
        sluggish = await websockets.connect(
            f"{origin}{route}?api_key={KEY}", max_queue=1, max_size=None, compression=None
        )
        if route == "/ws":
            await sluggish.send(envelope("start", "s0", chat_prompt="Be brief."))
            await sluggish.send(envelope("message", "t1", user_utterance="talk", sampling={"max_tokens": 10**8}))
        elif route == "/v1/responses":
            await sluggish.send(json.dumps({"type": "response.create", "input": "talk", "max_output_tokens": 10**8}))
        else:
            for i in range(4):  # each result is 256 pieces of 64 KiB: far more than the socket buffers hold
                body = {"messages": [{"role": "user", "content": "talk"}], "thinking_effort": "none"}
                await sluggish.send(json.dumps({"request": body, "client_request_id": f"j{i}"}))
        slots, running = await settled(origin, engine)
        assert (slots, running) == (0, 0), f"{route}: a client that reads nothing still holds its slot"
        await sluggish.close()


async def test_ws_completions_honours_deploy_mode_and_the_banned_phrases(tmp_path: Path) -> None:
    bias_file = tmp_path / "banned.json"
    bias_file.write_text(json.dumps({"banana": -100}))
    engine = RecordingFake(text="ok")
    async with live_server(engine, {"tool": StubClassifier()}, deploy_mode="tool") as origin:
        refused = await job(origin)
    assert refused["status"] == "error" and refused["code"] == "not_deployed"
    assert "DEPLOY_MODE=tool" in refused["error"] and engine.requests == []
    async with live_server(engine, chat_logit_bias_file=bias_file) as origin:
        done = await job(origin)
    assert done["status"] == "completed"
    banned = set(engine.tokenizer.encode("banana", add_special_tokens=False))
    assert engine.requests and all(banned <= set(r.sampling.logit_bias or {}) for r in engine.requests)


def test_engine_errors_map_to_codes_through_one_table() -> None:
    from yap_engines.errors import ContextTooLongError, EngineDeadError, GenerationError, UnsupportedFeature
    from yap_server.streaming import failure_for

    cases = {
        ContextTooLongError("long"): ("context_too_long", 400, "context_length_exceeded"),
        UnsupportedFeature("regex", "no regex"): ("unsupported", 400, "unsupported_parameter"),
        EngineDeadError("gone"): ("engine_error", 503, "engine_unavailable"),
        GenerationError("boom"): ("engine_error", 500, "engine_error"),
    }
    for exc, expected in cases.items():
        failure = failure_for(exc)
        assert (failure.code, failure.status, failure.openai_code) == expected, exc


async def test_a_mid_stream_engine_error_gets_the_same_code_on_every_route() -> None:
    engine = FakeEngine(text="one two three four five", fail_after=2)
    async with live_server(engine) as origin:
        frames = await ws_turn(origin, "hi")
        events = await respond(origin, input="hi")
        result = await job(origin)
        streamed = await chat_completion(origin, stream=True)
    assert frames[-1]["type"] == "error" and frames[-1]["payload"]["code"] == "engine_error"
    assert events[-1]["type"] == "response.failed" and events[-1]["response"]["error"]["code"] == "server_error"
    assert result["status"] == "error" and result["code"] == "engine_error"
    assert '"code":"engine_error"' in streamed.text and streamed.text.endswith("data: [DONE]\n\n")
    assert engine.num_unfinished_requests() == 0


# -- the behaviour matrix (FakeEngine) ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_every_route_in_every_deploy_mode(mode: str, chat: FakeEngine) -> None:
    classifier = StubClassifier()
    async with live_server(chat, {"chat": chat, "tool": classifier}, deploy_mode=mode) as origin:
        frames = await ws_turn(origin)
        call = await respond(origin, input=[{"role": "user", "content": SCREEN}], tools=TOOLS)
        plain = await respond(origin, input="hello there")
        result = await job(origin)
        whole = await chat_completion(origin, stream=False)
        streamed = await chat_completion(origin, stream=True)
    kinds = [f["type"] for f in frames]
    if mode == "tool":
        assert kinds == ["toolcall", "done"]
        assert call[-1]["response"]["output"][0]["type"] == "function_call"
        assert plain[-1]["type"] == "error" and plain[-1]["code"] == "not_deployed"
        assert "DEPLOY_MODE=tool" in plain[-1]["message"]
        assert result["code"] == "not_deployed" and "DEPLOY_MODE=tool" in result["error"]
        for response in (whole, streamed):
            assert response.status_code == 503 and "DEPLOY_MODE=tool" in response.json()["error"]["message"]
        assert chat.requests_started == 0
    else:
        assert kinds[-1] == "done" and "token" in kinds
        assert ("toolcall" in kinds) == (mode == "both")
        called = call[-1]["response"]["output"][0]["type"] == "function_call"
        assert called == (mode == "both")
        assert plain[-1]["type"] == "response.completed"
        assert result["status"] == "completed"
        assert whole.status_code == 200 and whole.json()["choices"][0]["message"]["content"] == "Sure, here you go."
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    if mode == "chat":
        assert classifier.calls == []
    else:  # /ws names the call /v1/responses makes
        assert frames[0]["payload"]["raw"] == [{"name": call[-1]["response"]["output"][0]["name"]}]
    assert chat.num_unfinished_requests() == 0


async def test_the_banned_phrases_reach_every_generating_route(tmp_path: Path) -> None:
    bias_file = tmp_path / "banned.json"
    bias_file.write_text(json.dumps({"banana": -100, "As an AI": -50}))
    engine = RecordingFake(text="fine")
    async with live_server(engine, chat_logit_bias_file=bias_file) as origin:
        await ws_turn(origin, "hi")
        await respond(origin, input="hi")
        await job(origin)
        await chat_completion(origin, stream=False)
        await chat_completion(origin, stream=True)
    banned = set(engine.tokenizer.encode("banana", add_special_tokens=False))
    prefixes = {r.request_id.split("-")[0] for r in engine.requests}
    assert {"yap", "j1", "chatcmpl"} <= prefixes and len(engine.requests) == 5
    for request in engine.requests:
        assert banned <= set(request.sampling.logit_bias or {}), request.request_id


@pytest.mark.parametrize("mode", ["both", "tool"])
async def test_a_failing_classifier_gives_no_everywhere(mode: str, chat: FakeEngine) -> None:
    async with live_server(chat, {"chat": chat, "tool": StubClassifier(fail=True)}, deploy_mode=mode) as origin:
        frames = await ws_turn(origin)
        events = await respond(origin, input=[{"role": "user", "content": SCREEN}], tools=TOOLS)
    assert frames[0]["payload"]["status"] == "no" and frames[-1]["type"] == "done"
    assert events[-1]["type"] == "response.completed"
    assert all(item["type"] == "message" for item in events[-1]["response"]["output"])


@pytest.mark.parametrize("route", ["/ws", "/v1/responses", "/ws/completions", "/v1/chat/completions"])
async def test_cancel_and_disconnect_free_the_slot_and_the_engine_request(route: str) -> None:
    engine = FakeEngine(text="word " * 400, tokens_per_s=50)
    async with live_server(engine, final_max_tokens=400) as origin:
        for how in ("cancel", "disconnect"):
            if route == "/v1/chat/completions":
                async with httpx.AsyncClient(base_url=http_origin(origin), headers={"X-API-Key": KEY}) as http:
                    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": True}
                    async with http.stream("POST", route, json=body) as response:
                        async for line in response.aiter_lines():
                            if '"content":"word' in line:
                                break  # leaving the block closes the connection: the client is gone
                assert await settled(origin, engine) == (0, 0), how
                continue
            ws = await websockets.connect(f"{origin}{route}?api_key={KEY}")
            if route == "/ws":
                await ws.send(envelope("start", "t1", chat_prompt="Be brief.", user_utterance="talk"))
                while (await recv_json(ws))["type"] != "token":
                    pass
                cancel = envelope("cancel", "t1")
                ended = ("cancelled",)
            elif route == "/v1/responses":
                await ws.send(json.dumps({"type": "response.create", "input": "talk"}))
                while (await recv_json(ws))["type"] != "response.output_text.delta":
                    pass
                cancel = json.dumps({"type": "response.cancel"})
                ended = ("response.incomplete",)
            else:
                body = {"messages": [{"role": "user", "content": "talk"}], "thinking_effort": "none"}
                await ws.send(json.dumps({"request": body, "client_request_id": "j1"}))
                await until_running(engine)
                cancel = json.dumps({"type": "cancel", "client_request_id": "j1"})
                ended = ("result",)
            if how == "cancel":
                await ws.send(cancel)
                terminals = []
                while not terminals:
                    frame = await recv_json(ws)
                    if frame["type"] in ended:
                        terminals.append(frame)
                assert engine.num_unfinished_requests() == 0
                await ws.close()
            else:
                ws.transport.abort()  # no close handshake, like a dropped network
            assert await settled(origin, engine) == (0, 0), (route, how)


# -- the chat routes on the demo model (vLLM, CPU) -----------------------------------------------------


@pytest.mark.vllm
async def test_the_chat_routes_on_the_demo_model_on_vllm(vllm_engine: InferenceEngine, tmp_path: Path) -> None:
    bias_file = tmp_path / "banned.json"
    bias_file.write_text(json.dumps({"banana": -100}))
    settings = {"chat_max_out": 8, "final_max_tokens": 8, "chat_logit_bias_file": bias_file}
    async with live_server(vllm_engine, **settings) as origin:
        frames = await ws_turn(origin, "hello")
        events = await respond(origin, input="hello", max_output_tokens=8)
        result = await job(origin)
        async with httpx.AsyncClient(base_url=http_origin(origin), headers={"X-API-Key": KEY}, timeout=60) as http:
            models = (await http.get("/v1/models")).json()["data"]
            body = {"model": models[0]["id"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
            whole = await http.post("/v1/chat/completions", json=body)
        assert frames[-1]["type"] == "done" and frames[-1]["payload"]["usage"]["completion_tokens"] <= 8
        assert events[-1]["type"] in ("response.completed", "response.incomplete")
        assert result["status"] == "completed"
        assert whole.status_code == 200 and whole.json()["usage"]["completion_tokens"] <= 8
        assert await settled(origin, vllm_engine) == (0, 0)
