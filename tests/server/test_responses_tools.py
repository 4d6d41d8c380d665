"""The client's function tools on `WS /v1/responses` (fake engines, real uvicorn, every event checked
against the OpenAI SDK's models): the model's calls as `function_call` items, `function_call_output`
input rendered back, guided `required`, the errors, and the classifier's tool beside client tools."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from yap_engines import FakeEngine

from . import test_responses_ws
from .conftest import RecordingFake
from .test_responses_ws import KeywordClassifier, PromptRecorder, streamed_text, user

probe_factory = test_responses_ws.probe_factory  # the same fixture: sockets on live servers, closed at the end

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "name": "get_weather", "description": "Weather in a city", "parameters": WEATHER},
    {"type": "function", "name": "take_screenshot", "parameters": {"type": "object", "properties": {}}},
]
CALL_TEXT = 'One moment. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def calls_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in response["output"] if item["type"] == "function_call"]


async def test_the_models_call_is_a_function_call_item_and_its_output_continues(probe_factory: Any) -> None:
    recorder = PromptRecorder("It is sunny.")
    engine = FakeEngine(script=[CALL_TEXT], model_id="m")
    probe = await probe_factory(engine, {"chat": engine})
    events = await probe.respond(input=[user("weather in Paris?")], tools=TOOLS)
    kinds = [e["type"] for e in events]
    assert kinds[-6:] == [
        "response.output_item.done",  # the text before the call
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert streamed_text(events) == "One moment."
    response = events[-1]["response"]
    (call,) = calls_of(response)
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert call["status"] == "completed" and call["call_id"].startswith("call_")

    probe2 = await probe_factory(recorder.engine, {"chat": recorder.engine})
    conversation = [
        user("weather in Paris?"),
        {"type": "function_call", "call_id": "call_7", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_7", "output": "sunny, 24C"},
    ]
    reply = await probe2.respond(input=conversation, tools=TOOLS)
    assert streamed_text(reply) == "It is sunny."
    prompt = recorder.prompts[-1]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<tool_response>\nsunny, 24C\n</tool_response>" in prompt
    assert '"name": "get_weather"' in prompt.split("<|im_start|>user")[0]  # the definitions in the system message
    assert "take_screenshot" not in prompt  # the classifier's tool is never shown to the model


async def test_required_is_guided_and_errors_name_the_field(probe_factory: Any) -> None:
    engine = RecordingFake(model_id="m")
    probe = await probe_factory(engine, {"chat": engine})
    events = await probe.respond(input=[user("weather?")], tools=TOOLS, tool_choice="required")
    (call,) = calls_of(events[-1]["response"])
    assert call["name"] == "get_weather" and "city" in json.loads(call["arguments"])
    assert engine.requests[-1].structured_output.spec["type"] == "array"

    bad_schema = [{"type": "function", "name": "f", "parameters": {"type": "nonsense"}}]
    for params, field in (
        ({"tools": bad_schema}, "tools[0].parameters"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"input": [user("hi"), {"type": "function_call_output", "call_id": "x", "output": "1"}]}, "input[1].call_id"),
    ):
        (error,) = await probe.respond(**{"input": [user("hi")], **params})
        assert error["type"] == "error" and error["param"] == field, error
        assert field.split("[")[0] in error["message"]


async def test_the_classifier_tool_and_client_tools_combine(probe_factory: Any) -> None:
    engine = FakeEngine(script=[CALL_TEXT], model_id="m")
    classifier = KeywordClassifier()
    probe = await probe_factory(engine, {"chat": engine, "tool": classifier}, deploy_mode="both")
    screen = await probe.respond(input=[user("look at my screen")], tools=TOOLS)
    assert [c["name"] for c in calls_of(screen[-1]["response"])] == ["take_screenshot"]
    weather = await probe.respond(input=[user("weather in Paris?")], tools=TOOLS)
    assert [c["name"] for c in calls_of(weather[-1]["response"])] == ["get_weather"]
    assert [utterance for _, utterance in classifier.calls] == ["look at my screen", "weather in Paris?"]


async def test_cancel_in_the_middle_of_a_call_ends_the_response_and_leaves_nothing_running(probe_factory: Any) -> None:
    words = " ".join(f'"k{i}": {i},' for i in range(1500))
    engine = FakeEngine(
        text=f'<tool_call>{{"name": "get_weather", "arguments": {{{words} "city": "Paris"}}}}</tool_call>',
        tokens_per_s=200,
        model_id="m",
    )  # over 7 s of call text
    probe = await probe_factory(engine, {"chat": engine})
    await probe.create(input=[user("weather?")], tools=TOOLS)
    assert (await probe.recv())["type"] == "response.created"
    for _ in range(200):  # the engine is generating the call (held, so nothing is streamed yet)
        if engine.num_unfinished_requests() == 1:
            break
        await asyncio.sleep(0.01)
    await probe.send({"type": "response.cancel"})
    events = await probe.until_final()
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "cancelled"}
    assert not calls_of(events[-1]["response"])
    for _ in range(300):
        if engine.num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.num_unfinished_requests() == 0
