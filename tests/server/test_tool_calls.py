"""Function calling on `/v1/chat/completions` through the official `openai` SDK against a real uvicorn on
127.0.0.1: scripted call text in each built-in format (streamed and not), guided `required` and named
calls, the conversation a tool produces, the errors, and cancel mid-call."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from yap_engines import FakeEngine
from yap_engines.adapters.fake import FakeTokenizer

from .conftest import KEY, RecordingFake
from .test_openai_api import openai_server, sdk, until_idle

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "hang_up", "description": "End the call", "parameters": {}}},
    {
        "type": "function",
        "function": {
            "name": "book_table",
            "description": "Book a restaurant table",
            "parameters": {
                "type": "object",
                "properties": {"people": {"type": "integer", "minimum": 1}, "time": {"type": "string"}},
                "required": ["people", "time"],
            },
        },
    },
]
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]
PARIS = {"city": "Paris", "unit": "celsius"}

# One reply per format: a little text, then two calls (when the format allows text before a call).
SCRIPTS = {
    "hermes": (
        'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "hang_up", "arguments": {}}\n</tool_call>',
        "Let me check.",
    ),
    "llama3_json": (
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}; '
        '{"name": "hang_up", "parameters": {}}',
        None,
    ),
    "mistral": (
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, '
        '{"name": "hang_up", "arguments": {}}]',
        None,
    ),
}


async def streamed(client: openai.AsyncOpenAI, **kwargs: Any) -> tuple[str, list[dict[str, Any]], str | None, list]:
    """Stream a completion; rebuild content and calls from the deltas as a client does (and keep the deltas)."""
    content, calls, finish, deltas = "", [], None, []
    stream = await client.chat.completions.create(stream=True, **kwargs)
    async for chunk in stream:
        choice = chunk.choices[0]
        deltas.append(choice.delta)
        content += choice.delta.content or ""
        for call in choice.delta.tool_calls or ():
            if call.index == len(calls):
                assert call.id and call.function and call.function.name, "a new call opens with its id and name"
                calls.append({"id": call.id, "name": call.function.name, "arguments": call.function.arguments or ""})
            else:
                assert call.id is None and call.index == len(calls) - 1
                calls[call.index]["arguments"] += call.function.arguments or ""
        finish = choice.finish_reason or finish
    return content, calls, finish, deltas


@pytest.mark.parametrize("fmt", sorted(SCRIPTS))
async def test_each_format_streams_and_returns_the_same_calls(fmt: str) -> None:
    script, text = SCRIPTS[fmt]
    async with openai_server(FakeEngine(text=script, model_id="m"), tool_call_parser=fmt) as base:
        client = sdk(base)
        kwargs: dict[str, Any] = {"model": "m", "messages": ASK, "tools": TOOLS, "temperature": 0}
        whole = await client.chat.completions.create(**kwargs)
        content, calls, finish, deltas = await streamed(client, **kwargs)
    message = whole.choices[0].message
    assert whole.choices[0].finish_reason == "tool_calls" and finish == "tool_calls"
    assert message.content == text and (content or None) == text
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or ()] == [
        ("get_weather", PARIS),
        ("hang_up", {}),
    ]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", PARIS), ("hang_up", {})]
    assert all(c.id.startswith("call_") for c in message.tool_calls or ())
    # never a half call as content: no content delta holds any of the call's text
    assert not any("get_weather" in (d.content or "") or "{" in (d.content or "") for d in deltas)


async def test_a_reply_without_a_call_streams_as_content_and_a_malformed_call_is_content_and_counted() -> None:
    plain = "It is sunny in Paris < 30 degrees."
    broken = 'Sure. <tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>'
    engine = FakeEngine(script=[plain, broken, broken], model_id="m")
    async with openai_server(engine) as base:
        client = sdk(base)
        kwargs: dict[str, Any] = {"model": "m", "messages": ASK, "tools": TOOLS}
        first = await client.chat.completions.create(**kwargs)
        assert first.choices[0].message.content == plain and first.choices[0].message.tool_calls is None
        assert first.choices[0].finish_reason == "stop"
        second = await client.chat.completions.create(**kwargs)
        assert second.choices[0].message.content == broken and second.choices[0].finish_reason == "stop"
        content, calls, finish, _ = await streamed(client, **kwargs)
        assert (content, calls, finish) == (broken, [], "stop")
        async with httpx.AsyncClient() as http:
            metrics = (
                await http.get(base.removesuffix("/v1") + "/metrics", headers={"Authorization": f"Bearer {KEY}"})
            ).text
    assert 'yap_errors_total{type="malformed_tool_call"} 2.0' in metrics


async def test_required_and_named_are_guided_by_the_schemas() -> None:
    engine = RecordingFake(model_id="m")
    async with openai_server(engine) as base:
        client = sdk(base)
        required = await client.chat.completions.create(
            model="m", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False
        )
        schema = engine.requests[-1].structured_output.spec
        assert schema["type"] == "array" and schema["maxItems"] == 1
        calls = required.choices[0].message.tool_calls or []
        assert len(calls) == 1 and required.choices[0].finish_reason == "tool_calls"
        by_name = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
        jsonschema.validate(json.loads(calls[0].function.arguments), by_name[calls[0].function.name] or {})
        named = {"type": "function", "function": {"name": "book_table"}}
        content, streamed_calls, finish, _ = await streamed(
            client, model="m", messages=ASK, tools=TOOLS, tool_choice=named
        )
        assert engine.requests[-1].structured_output.spec == TOOLS[2]["function"]["parameters"]
        assert [c["name"] for c in streamed_calls] == ["book_table"] and finish == "tool_calls" and content == ""
        jsonschema.validate(json.loads(streamed_calls[0]["arguments"]), TOOLS[2]["function"]["parameters"])


async def test_tool_choice_none_leaves_the_text_alone_and_keeps_tools_out_of_the_prompt() -> None:
    script = SCRIPTS["hermes"][0]
    engine = RecordingFake(text=script, model_id="m")
    async with openai_server(engine) as base:
        reply = await sdk(base).chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="none")
    assert reply.choices[0].message.content == script and reply.choices[0].message.tool_calls is None
    assert "get_weather" not in FakeTokenizer().decode(engine.requests[-1].prompt_token_ids)


async def test_the_conversation_a_tool_produces_is_rendered_by_the_text_fallback() -> None:
    engine = RecordingFake(text="It is 18 degrees in Paris.", model_id="m")
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages: list[Any] = [
        {"role": "system", "content": "You are brief."},
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18}'},
    ]
    async with openai_server(engine) as base:
        reply = await sdk(base).chat.completions.create(model="m", messages=messages, tools=TOOLS)
    assert reply.choices[0].message.content == "It is 18 degrees in Paris."
    rendered = engine.requests[-1].messages
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"]
    assert rendered[0]["content"].startswith("You are brief.") and '"name": "get_weather"' in rendered[0]["content"]
    assert (
        rendered[2]["content"] == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    assert rendered[3]["content"] == '<tool_response>\n{"temperature": 18}\n</tool_response>'


class ToolTemplateTokenizer(FakeTokenizer):
    """A tokenizer whose chat template renders tools (as Qwen's does): records what it was given."""

    chat_template = "{% if tools %}...{% endif %}{% for m in messages %}{{ m.tool_calls }}<tool_call>{% endfor %}"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []

    def apply_chat_template(
        self, messages: Any, add_generation_prompt: bool = True, tokenize: bool = True, **kw: Any
    ) -> Any:
        self.seen.append({"messages": list(messages), **kw})
        return super().apply_chat_template(messages, add_generation_prompt, tokenize)


async def test_a_template_that_renders_tools_gets_structured_messages_and_tools() -> None:
    tokenizer = ToolTemplateTokenizer()
    engine = FakeEngine(text=SCRIPTS["hermes"][0], model_id="m", tokenizer=tokenizer)
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages: list[Any] = [
        *ASK,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18"},
    ]
    async with openai_server(engine) as base:
        reply = await sdk(base).chat.completions.create(model="m", messages=messages, tools=TOOLS)
    assert reply.choices[0].finish_reason == "tool_calls"
    seen = tokenizer.seen[-1]
    assert [t["function"]["name"] for t in seen["tools"]] == ["get_weather", "hang_up", "book_table"]
    assert seen["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert seen["messages"][2] == {"role": "tool", "content": "18", "tool_call_id": "call_1", "name": "get_weather"}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
        ({"tool_choice": {"type": "function", "function": {"name": "missing"}}}, "tool_choice"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": None, "tool_choice": "required"}, "tool_choice"),
        ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]}, "messages[1].tool_call_id"),
        ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
    ],
)
async def test_bad_tool_requests_are_400_naming_the_field(change: dict[str, Any], param: str) -> None:
    async with openai_server(FakeEngine(model_id="m")) as base:
        body = {"model": "m", "messages": ASK, "tools": TOOLS, **change}
        body = {k: v for k, v in body.items() if v is not None}
        with pytest.raises(openai.BadRequestError) as raised:
            await sdk(base).chat.completions.create(**body)
    assert raised.value.body["param"] == param  # type: ignore[index]
    assert param.split("[")[0] in raised.value.body["message"]  # type: ignore[index]


async def test_cancel_in_the_middle_of_a_streamed_call_leaves_nothing_running() -> None:
    words = " ".join(f'"k{i}": {i},' for i in range(1500))
    engine = FakeEngine(
        text=f'<tool_call>{{"name": "hang_up", "arguments": {{{words} "end": 0}}}}</tool_call>',
        tokens_per_s=200,
        model_id="m",
    )
    async with openai_server(engine) as base:
        async with httpx.AsyncClient(timeout=10) as http:
            body = {"model": "m", "messages": ASK, "tools": TOOLS, "stream": True}
            async with http.stream(
                "POST", f"{base}/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
            ) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        break  # the role chunk: the call is being generated (and held)
            assert engine.num_unfinished_requests() in (0, 1)
        assert await until_idle(engine, within_s=3) == 0  # the whole reply takes over 7 s
    await asyncio.sleep(0)
