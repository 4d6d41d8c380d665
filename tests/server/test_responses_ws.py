"""`WS /v1/responses` over a real uvicorn socket with the `websockets` client (fake engine; one vLLM test).

Every event the server sends is also validated against the OpenAI SDK's own event models.
"""

from __future__ import annotations

import asyncio
import json
import time
import typing
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from openai.types.responses import ResponseStreamEvent

from yap_engines import ChatRequest, FakeEngine, FunctionEngine
from yap_engines.tool import ToolDecision

from .conftest import KEY, live_server

TERMINAL = ("response.completed", "response.incomplete", "response.failed")
TEXT_ORDER = [
    "response.created",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]
# The SDK's event models by their `type` (its union is discriminated only by the SDK's own decoder).
SDK_EVENTS = {
    cls.model_fields["type"].annotation.__args__[0]: cls
    for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}
AUTH = {"Authorization": f"Bearer {KEY}"}


class Probe:
    """A `/v1/responses` client that records every event and checks each against the SDK's models."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def recv(self, wait_s: float = 10) -> dict[str, Any]:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), wait_s))
        if (event.get("response") or {}).get("incomplete_details", {}) != {"reason": "cancelled"}:
            SDK_EVENTS[event["type"]].model_validate(event)  # "cancelled" is our documented extension; the SDK lacks it
        self.events.append(event)
        return dict(event)

    async def create(self, **params: Any) -> None:
        await self.send({"type": "response.create", "model": "yap", **params})

    async def until_final(self, lone_error: bool = False) -> list[dict[str, Any]]:
        """Events up to a terminal event (or, with `lone_error`, an `error` that comes first)."""
        got = []
        while True:
            event = await self.recv()
            got.append(event)
            if event["type"] in TERMINAL or (lone_error and event["type"] == "error" and len(got) == 1):
                return got

    async def respond(self, **params: Any) -> list[dict[str, Any]]:
        """Create a response and read its events up to its final one."""
        await self.create(**params)
        return await self.until_final(lone_error=True)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "input_text", "text": text}]}


def streamed_text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def output_text(response: dict[str, Any]) -> str:
    return "".join(p["text"] for item in response["output"] if item["type"] == "message" for p in item["content"])


class PromptRecorder:
    """A FunctionEngine reply source that records every prompt (as text) and says `reply`."""

    def __init__(self, reply: str = "Sure, here it is.", delay_s: float = 0.0) -> None:
        self.reply = reply
        self.delay_s = delay_s
        self.prompts: list[str] = []
        self.engine = FunctionEngine(self)

    def __call__(self, request: ChatRequest) -> AsyncIterator[str]:
        self.prompts.append(self.engine.tokenizer.decode(request.prompt_token_ids))
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[str]:
        for piece in self.reply.split(" "):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield piece + " "


class KeywordClassifier:
    """A stand-in for `ToolClassifier` (same `classify` contract): yes when the utterance mentions the screen."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str]] = []

    async def classify(self, history: Any, utterance: str) -> ToolDecision:
        self.calls.append((list(history), utterance))
        yes = "screen" in utterance
        return ToolDecision("yes" if yes else "no", 0.9 if yes else 0.1, "LABEL_1" if yes else "LABEL_0", 1.0)

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def probe_factory() -> AsyncIterator[Any]:
    """Open `/v1/responses` sockets on live servers; all are closed at the end."""
    stack: list[Any] = []

    async def open_probe(engine: Any, engines: dict[str, Any] | None = None, **overrides: Any) -> Probe:
        server = live_server(engine, engines, **overrides)
        origin = await server.__aenter__()
        stack.append(server)
        ws = await websockets.connect(f"{origin}/v1/responses", additional_headers=AUTH, max_size=2**21)
        stack.append(ws)
        return Probe(ws)

    yield open_probe
    for item in reversed(stack):
        if hasattr(item, "__aexit__"):
            await item.__aexit__(None, None, None)
        else:
            await item.close()


async def test_a_response_streams_in_openai_order_and_output_matches_the_stream(probe_factory: Any) -> None:
    engine = FakeEngine(text="  Hello there, how are you today?  \n")
    probe = await probe_factory(engine, stream_flush_ms=0)  # a delta per engine delta, however busy the machine
    events = await probe.respond(input=[user("hi")], instructions="Be brief.")
    kinds = [e["type"] for e in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 3
    assert kinds == TEXT_ORDER[:3] + ["response.output_text.delta"] * deltas + TEXT_ORDER[4:] + ["response.completed"]
    numbers = [e["sequence_number"] for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(events)))
    created, completed = events[0]["response"], events[-1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert completed["id"] == created["id"] and completed["status"] == "completed"
    item_id = events[1]["item"]["id"]
    assert all(e["item_id"] == item_id for e in events if "item_id" in e)
    assert all(e["output_index"] == 0 for e in events if "output_index" in e)
    text = streamed_text(events)
    assert text == "Hello there, how are you today?"  # no edge whitespace, so a client's stored copy matches
    assert output_text(completed) == text == events[-4]["text"]
    assert completed["output"] == [events[-2]["item"]]
    assert completed["usage"]["output_tokens"] > 0 and completed["usage"]["input_tokens"] > 0
    again = await probe.respond(input=[user("again")])
    assert again[0]["response"]["id"] != created["id"] and again[1]["item"]["id"] != item_id
    assert again[0]["sequence_number"] == numbers[-1] + 1
    assert engine.num_unfinished_requests() == 0


async def test_a_chained_turn_sees_the_whole_conversation(probe_factory: Any) -> None:
    recorder = PromptRecorder("Paris is the capital.")
    probe = await probe_factory(recorder.engine)
    first = await probe.respond(input=[user("What is the capital of France?")], instructions="You are a guide.")
    first_id = first[-1]["response"]["id"]
    second = await probe.respond(input=[user("And of Spain?")], previous_response_id=first_id, instructions="Guide.")
    assert second[-1]["type"] == "response.completed"
    assert second[-1]["response"]["previous_response_id"] == first_id
    prompt = recorder.prompts[-1]
    order = ["Guide.", "What is the capital of France?", "Paris is the capital.", "And of Spain?"]
    positions = [prompt.find(text) for text in order]
    assert -1 not in positions and positions == sorted(positions), prompt
    assert "You are a guide." not in prompt  # instructions are per request, as in OpenAI's API

    missing = await probe.respond(input=[user("hello?")], previous_response_id="resp_nope")
    assert [e["type"] for e in missing] == ["error"]
    assert missing[0]["error"]["code"] == missing[0]["code"] == "previous_response_not_found"
    assert missing[0]["error"]["param"] == "previous_response_id"
    full = await probe.respond(input=[user("hello?")])  # the connection is fine after the error
    assert full[-1]["type"] == "response.completed"
    assert len(recorder.prompts) == 3


async def test_cancel_mid_stream_ends_promptly_and_aborts_the_engine_request(probe_factory: Any) -> None:
    engine = FakeEngine(text="word " * 200, tokens_per_s=40)
    probe = await probe_factory(engine)
    await probe.create(input=[user("talk to me")])
    events = [await probe.recv() for _ in range(4)]
    assert events[-1]["type"] == "response.output_text.delta"
    response_id = events[0]["response"]["id"]
    assert engine.num_unfinished_requests() == 1
    sent = time.perf_counter()
    await probe.send({"type": "response.cancel", "response_id": response_id})
    events += await probe.until_final()
    elapsed = time.perf_counter() - sent
    final = events[-1]
    # uncancelled, the reply (capped at 150 tokens, 40 a second) would run for more than 3 s after the cancel
    assert final["type"] == "response.incomplete" and elapsed < 2.5
    assert final["response"]["incomplete_details"] == {"reason": "cancelled"}
    assert engine.num_unfinished_requests() == 0
    assert [e["type"] for e in events[-4:-1]] == TEXT_ORDER[4:]
    assert events[-2]["item"]["status"] == "incomplete"
    assert output_text(final["response"]) == streamed_text(events)
    assert sum(e["type"] in TERMINAL for e in events) == 1

    await probe.send({"type": "response.cancel", "response_id": response_id})  # already ended: ignored
    after = await probe.respond(input=[user("next")])
    assert after[0]["type"] == "response.created"
    assert after[0]["sequence_number"] == final["sequence_number"] + 1  # nothing was sent for the late cancel


async def test_the_spoken_part_replaces_a_cancelled_reply_in_a_chained_turn(probe_factory: Any) -> None:
    recorder = PromptRecorder("alpha beta gamma delta epsilon zeta eta theta iota kappa", delay_s=0.05)
    probe = await probe_factory(recorder.engine)
    await probe.create(input=[user("count in greek")])
    events = [await probe.recv() for _ in range(5)]
    response_id = events[0]["response"]["id"]
    await probe.send({"type": "response.cancel", "response_id": response_id})
    events += await probe.until_final()
    assert events[-1]["response"]["incomplete_details"]["reason"] == "cancelled"
    spoken = {"role": "assistant", "content": "alpha"}
    chained = await probe.respond(input=[spoken, user("go on")], previous_response_id=response_id)
    assert chained[-1]["type"] == "response.completed"
    prompt = recorder.prompts[-1]
    assert prompt.count("alpha") == 1 and "beta" not in prompt.split("go on")[0], prompt


async def test_a_cancel_after_completion_is_ignored(probe_factory: Any) -> None:
    engine = FakeEngine(text="Done already.")
    probe = await probe_factory(engine)
    events = await probe.respond(input=[user("quick")])
    await probe.send({"type": "response.cancel", "response_id": events[0]["response"]["id"]})
    await probe.send({"type": "response.cancel", "response_id": "resp_never_existed"})
    with pytest.raises(TimeoutError):
        await probe.recv(wait_s=0.3)


async def test_one_response_at_a_time_and_bad_frames_keep_the_connection(probe_factory: Any) -> None:
    engine = FakeEngine(text="steady " * 20, tokens_per_s=200)
    probe = await probe_factory(engine)
    await probe.create(input=[user("first")])
    assert (await probe.recv())["type"] == "response.created"
    await probe.create(input=[user("second")])
    await probe.ws.send("{not json")
    await probe.send({"type": "session.update"})
    events = await probe.until_final()
    errors = [e for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["response_in_progress", "invalid_json", "unknown_event_type"]
    assert all(e["message"] and e["error"]["message"] == e["message"] for e in errors)
    assert events[-1]["type"] == "response.completed"
    assert streamed_text(events) == ("steady " * 20).strip()
    assert engine.requests_started == 1

    for params, code, param in [
        ({"temperature": 5}, "invalid_sampling", "temperature"),
        ({"max_output_tokens": 10_000}, "invalid_sampling", "max_output_tokens"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "invalid_request",
            None,
        ),
        ({"input": [{"type": "computer_call"}]}, "invalid_request", None),
        ({"input": []}, "invalid_request", "input"),
        ({"voice": "alloy"}, "invalid_request", None),
        ({"text": {"format": {"type": "json_object"}}}, "invalid_request", None),
    ]:
        body = {"input": [user("hi")], **params}
        got = await probe.respond(**body)
        assert [e["type"] for e in got] == ["error"], params
        assert got[0]["code"] == code and got[0]["param"] == param, got[0]
    big = json.dumps({"type": "response.create", "input": "x" * 1_100_000})
    await probe.ws.send(big)
    too_large = await probe.recv()
    assert too_large["code"] == "message_too_large" and "1000000" in too_large["message"]
    assert (await probe.respond(input=[user("still here?")]))[-1]["type"] == "response.completed"
    assert engine.requests_started == 2


async def test_failure_paths_end_with_exactly_one_final_event(probe_factory: Any) -> None:
    engine = FakeEngine(text="one two three four five six", fail_after=3)
    probe = await probe_factory(engine)
    events = await probe.respond(input=[user("go")])
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"
    assert not [e for e in events if e["type"] == "error"]
    assert output_text(events[-1]["response"]) == streamed_text(events) == "one two three"
    assert engine.num_unfinished_requests() == 0

    capped = FakeEngine(text="a b c d e f g h")
    probe = await probe_factory(capped)
    events = await probe.respond(input=[user("go")], max_output_tokens=3)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert streamed_text(events) == "a b c"


async def test_reasoning_never_reaches_the_output(probe_factory: Any) -> None:
    async def thinking(request: ChatRequest) -> AsyncIterator[str]:
        for piece in ["<think>", "the secret", " plan", "</think>", "\n\n", "Visible", " answer."]:
            yield piece

    probe = await probe_factory(FunctionEngine(thinking))
    events = await probe.respond(input=[user("think first")])
    assert streamed_text(events) == output_text(events[-1]["response"]) == "Visible answer."
    assert "secret" not in json.dumps(events)


async def test_the_classifier_calls_the_declared_tool_and_its_result_continues_the_chat(probe_factory: Any) -> None:
    recorder = PromptRecorder("It shows a spreadsheet.")
    classifier = KeywordClassifier()
    probe = await probe_factory(recorder.engine, {"chat": recorder.engine, "tool": classifier}, deploy_mode="both")
    tools = [{"type": "function", "name": "take_screenshot", "parameters": {"type": "object", "properties": {}}}]
    events = await probe.respond(input=[user("what is on my screen?")], tools=tools)
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    call = events[-1]["response"]["output"][0]
    assert call["type"] == "function_call" and call["name"] == "take_screenshot" and call["arguments"] == "{}"
    assert call == events[-2]["item"] and call["call_id"].startswith("call_")
    assert classifier.calls == [([], "what is on my screen?")]
    assert recorder.engine.num_unfinished_requests() == 0

    result = {"type": "function_call_output", "call_id": call["call_id"], "output": "a spreadsheet of sales"}
    previous = events[-1]["response"]["id"]
    reply = await probe.respond(input=[result], tools=tools, previous_response_id=previous)
    assert streamed_text(reply) == "It shows a spreadsheet."
    assert "Here is what is on my screen: a spreadsheet of sales" in recorder.prompts[-1]
    assert len(classifier.calls) == 1  # a tool result is not an utterance

    chat = await probe.respond(
        input=[user("tell me a joke")], tools=tools, previous_response_id=reply[-1]["response"]["id"]
    )
    assert chat[-1]["response"]["output"][0]["type"] == "message"
    assert classifier.calls[-1] == (["what is on my screen?"], "tell me a joke")
    undeclared = await probe.respond(input=[user("look at my screen")])
    assert undeclared[-1]["response"]["output"][0]["type"] == "message"
    assert len(classifier.calls) == 2  # no declared tool: the classifier is skipped


async def test_auth_is_required_and_a_bearer_key_works() -> None:
    async with live_server(FakeEngine(text="ok")) as origin:
        async with websockets.connect(f"{origin}/v1/responses") as ws:
            refused = json.loads(await ws.recv())
            assert refused["type"] == "error" and refused["code"] == "authentication_failed"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        headers = {"Authorization": "Bearer wrong"}
        async with websockets.connect(f"{origin}/v1/responses", additional_headers=headers) as ws:
            assert json.loads(await ws.recv())["code"] == "authentication_failed"
        async with websockets.connect(f"{origin}/v1/responses", additional_headers=AUTH) as ws:
            probe = Probe(ws)
            assert (await probe.respond(input="hello"))[-1]["type"] == "response.completed"


async def test_connection_slots_and_rate_limits_are_those_of_ws(probe_factory: Any) -> None:
    engine = FakeEngine(text="ok")
    probe = await probe_factory(
        engine, max_concurrent_connections=1, ws_handshake_acquire_timeout_s=0.05, ws_max_messages_per_window=2
    )
    assert (await probe.respond(input="one"))[-1]["type"] == "response.completed"
    assert (await probe.respond(input="two"))[-1]["type"] == "response.completed"
    limited = await probe.respond(input="three")
    assert [e["type"] for e in limited] == ["error"] and limited[0]["code"] == "rate_limited"
    origin = f"ws://127.0.0.1:{probe.ws.remote_address[1]}"
    async with websockets.connect(f"{origin}/v1/responses", additional_headers=AUTH) as second:
        refused = json.loads(await second.recv())
        assert refused["code"] == "server_at_capacity"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await second.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_without_the_chat_model_the_classifier_decision_is_the_response(probe_factory: Any) -> None:
    classifier = KeywordClassifier()
    probe = await probe_factory(FakeEngine(), {"tool": classifier}, deploy_mode="tool")
    tools = [{"type": "function", "name": "take_screenshot", "parameters": {}}]
    call = await probe.respond(input=[user("read my screen")], tools=tools)
    assert [item["type"] for item in call[-1]["response"]["output"]] == ["function_call"]
    no = await probe.respond(input=[user("hello")], tools=tools)
    assert no[-1]["type"] == "response.completed" and output_text(no[-1]["response"]) == ""
    undeclared = await probe.respond(input=[user("read my screen")])
    assert [e["type"] for e in undeclared] == ["error"] and undeclared[0]["code"] == "not_deployed"
    assert len(classifier.calls) == 2


async def test_idle_connections_are_closed_and_a_disconnect_aborts_the_response() -> None:
    engine = FakeEngine(text="word " * 200, tokens_per_s=40)
    async with live_server(engine, ws_idle_timeout_s=0.5) as origin:
        async with websockets.connect(f"{origin}/v1/responses", additional_headers=AUTH) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
        ws = await websockets.connect(f"{origin}/v1/responses", additional_headers=AUTH)
        probe = Probe(ws)
        await probe.create(input=[user("talk")])
        while (await probe.recv())["type"] != "response.output_text.delta":
            pass
        ws.transport.abort()
        for _ in range(300):
            if engine.num_unfinished_requests() == 0:
                break
            await asyncio.sleep(0.01)
        assert engine.num_unfinished_requests() == 0


@pytest.mark.vllm
async def test_the_demo_model_on_vllm_streams_and_cancels(vllm_engine: Any) -> None:
    eos = vllm_engine.tokenizer.eos_token_id
    async with live_server(vllm_engine, chat_max_out=1000) as origin:
        async with websockets.connect(f"{origin}/v1/responses", additional_headers=AUTH) as ws:
            probe = Probe(ws)
            events = await probe.respond(input=[user("hello")], max_output_tokens=16, temperature=0)
            assert events[-1]["type"] in ("response.completed", "response.incomplete")
            assert output_text(events[-1]["response"]) == streamed_text(events)
            await probe.create(input=[user("talk for long")], max_output_tokens=1000, logit_bias={str(eos): -100})
            while (await probe.recv())["type"] != "response.output_text.delta":
                pass
            await probe.send({"type": "response.cancel"})
            final = (await probe.until_final())[-1]
            assert final["response"]["incomplete_details"] == {"reason": "cancelled"}
            assert vllm_engine.num_unfinished_requests() == 0


# -- generate: false (a warm) ----------------------------------------------------------------------


async def test_generate_false_warms_answers_no_output_and_chains(probe_factory: Any) -> None:
    engine = FakeEngine(text="Sunny and warm.", cache_block_size=16)
    probe = await probe_factory(engine)
    persona = "You are a brief and friendly voice assistant who answers in one short sentence. " * 8
    events = await probe.respond(instructions=persona, input=[user("hi")], generate=False)
    assert [e["type"] for e in events] == ["response.created", "response.completed"]
    warmed = events[-1]["response"]
    assert warmed["output"] == []
    usage = warmed["usage"]
    assert usage["output_tokens"] == 0 and usage["input_tokens"] > 64
    assert usage["input_tokens_details"]["cached_tokens"] == usage["input_tokens"] - usage["input_tokens"] % 16
    assert engine.requests_started == 0 and engine.prefills_completed == 1
    events = await probe.respond(
        instructions=persona, previous_response_id=warmed["id"], input=[user("what is the weather?")]
    )
    final = events[-1]["response"]
    assert output_text(final) == "Sunny and warm."
    assert final["usage"]["input_tokens_details"]["cached_tokens"] >= usage["input_tokens_details"]["cached_tokens"]
    assert engine.num_unfinished_requests() == 0


async def test_generate_false_without_chat_is_not_deployed(probe_factory: Any) -> None:
    probe = await probe_factory(FakeEngine(), {"tool": KeywordClassifier()}, deploy_mode="tool")
    events = await probe.respond(input=[user("hi")], generate=False)
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "not_deployed"
    assert "generate" in events[-1]["error"]["message"]
