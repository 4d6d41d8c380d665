"""Tool-call parsers (`yap_engines.tool_calls`) and tool sets (`yap_engines.function_tools`): however a reply is
chunked, the parsers return the same content and calls; a call is never shown as content; malformed
blocks come back whole as content; guided schemas; vLLM's parsers reused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yap_engines.errors import InvalidRequestError
from yap_engines.function_tools import FunctionTool, ToolSet, tool_messages
from yap_engines.tool_calls import CallSplit, builtin_parser, detect_parser

NAMES = ("get_weather", "hang_up")
BAD = 'Bad: <tool_call>{"name": "unknown", "arguments": {}}</tool_call>'
# fmt: off
REPLIES = {
    "hermes": [
        ('Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
         "Let me check."),
        ('<tool_call>{"name": "hang_up", "arguments": {}}</tool_call>\n<tool_call>{"name": "get_weather", '
         '"arguments": {"city": "Oslo"}}</tool_call>', ""),
        ("Plain text with a < sign and <tool", "Plain text with a < sign and <tool"),
        (BAD, BAD),
        ('Cut <tool_call>{"name": "get_weather", "argu', 'Cut <tool_call>{"name": "get_weather", "argu'),
    ],
    "llama3_json": [
        ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}', ""),
        ('{"name": "hang_up", "parameters": {}}; {"name": "get_weather", "parameters": {"city": "Oslo"}}', ""),
        ("Hello, how can I help?", "Hello, how can I help?"),
        ("{not json at all}", "{not json at all}"),
    ],
    "mistral": [
        ('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]', ""),
        ('[TOOL_CALLS]hang_up[ARGS]{}[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}', ""),
        ("[1, 2, 3] are numbers", "[1, 2, 3] are numbers"),
    ],
}
# fmt: on


def run(fmt: str, text: str, cuts: list[int]) -> CallSplit:
    parser = builtin_parser(fmt, NAMES)
    out, start = CallSplit(), 0
    for cut in [*sorted(set(cuts)), len(text)]:
        out = out + parser.feed(text[start:cut])
        start = cut
    return out + parser.finish()


@pytest.mark.parametrize(("fmt", "text", "content"), [(f, t, c) for f, cases in REPLIES.items() for t, c in cases])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_chunking_gives_the_same_content_and_calls(fmt: str, text: str, content: str, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=12))
    whole, chunked = run(fmt, text, []), run(fmt, text, cuts)
    assert whole.content == chunked.content == content
    assert [(c.name, c.arguments) for c in whole.calls] == [(c.name, c.arguments) for c in chunked.calls]
    assert (
        whole.malformed
        == chunked.malformed
        == (1 if content and ("unknown" in text or "argu" in text[-5:] or text.startswith("{not")) else 0)
    )


def test_a_call_is_held_until_complete_and_content_streams_at_once() -> None:
    parser = builtin_parser("hermes", NAMES)
    assert parser.feed("Sure").content == "Sure"
    assert parser.feed(" thing. <tool_").content == " thing."
    assert parser.feed('call>{"name": "hang_up", ').content == ""
    done = parser.feed('"arguments": {}}</tool_call>')
    assert done.content == "" and [c.name for c in done.calls] == ["hang_up"]
    assert parser.finish() == CallSplit()


def test_guided_schemas_follow_the_choice() -> None:
    weather = FunctionTool("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}})
    tools = ToolSet((weather, FunctionTool("hang_up")), "required", parallel=False)
    schema = tools.guided().spec  # type: ignore[union-attr]
    assert schema["type"] == "array" and schema["maxItems"] == 1 and len(schema["items"]["anyOf"]) == 2
    named = ToolSet((weather,), "named", "get_weather")
    assert named.guided().spec == weather.parameters  # type: ignore[union-attr]
    assert ToolSet((weather,), "auto").guided() is None and ToolSet((weather,), "none").parser("hermes") is None
    parser = tools.parser("hermes")
    assert parser is not None
    assert [c.name for c in (parser.feed('[{"name": "hang_up", "parameters": {}}]') + parser.finish()).calls] == [
        "hang_up"
    ]


def test_a_schema_that_is_not_json_schema_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="not a valid JSON Schema"):
        FunctionTool("f", "", {"type": "nonsense"})
    with pytest.raises(InvalidRequestError, match="JSON Schema object"):
        FunctionTool("f", "", ["not", "an", "object"])  # type: ignore[arg-type]


def test_detection_from_the_template_and_the_fallback_rendering() -> None:
    class Tok:
        def __init__(self, template: str) -> None:
            self.chat_template = template

    assert detect_parser(Tok("{% if tools %}<tool_call>{% endif %}")) == "hermes"
    assert detect_parser(Tok("[TOOL_CALLS]")) == "mistral"
    assert detect_parser(Tok("<|python_tag|>")) == "llama3_json"
    assert detect_parser(Tok("{{ messages }}")) == "hermes"
    tools = ToolSet((FunctionTool("hang_up", "End the call"),))
    call = {"id": "c1", "type": "function", "function": {"name": "hang_up", "arguments": "{}"}}
    rendered = tool_messages(
        [{"role": "user", "content": "bye"}, {"role": "assistant", "content": "", "tool_calls": [call]},
         {"role": "tool", "tool_call_id": "c1", "content": "ok"}], tools, native=False,
    )  # fmt: skip
    assert [m["role"] for m in rendered.messages] == ["system", "user", "assistant", "user"]
    assert json.loads(rendered.messages[0]["content"].split("\n")[1])["name"] == "hang_up"
    assert rendered.template_kwargs == {}


@pytest.mark.vllm
def test_vllms_own_parsers_are_reused_by_name() -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed")
    from transformers import AutoTokenizer

    model = Path(__file__).resolve().parents[2] / "engines" / "smollm2-135m-instruct"
    if not model.exists():
        pytest.skip("the embedded default model is not built (make install)")
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    tools = ToolSet((FunctionTool("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}}),))
    parser = tools.parser("pythonic", tokenizer)
    assert parser is not None
    text = '[get_weather(city="Paris")]'
    chunks = [text[i : i + 3] for i in range(0, len(text), 3)]
    out = CallSplit()
    for chunk in chunks:
        out = out + parser.feed(chunk)
    out = out + parser.finish()
    assert [(c.name, json.loads(c.arguments)) for c in out.calls] == [("get_weather", {"city": "Paris"})]
    hermes = tools.parser("vllm:hermes", tokenizer)
    assert hermes is not None
    got = hermes.feed('<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>') + hermes.finish()
    assert [c.arguments for c in got.calls] == ['{"city": "Rome"}']


@pytest.mark.vllm
def test_an_unknown_tool_call_parser_fails_at_startup_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from yap_engines.settings import SettingsError
    from yap_server.settings import ServerSettings

    monkeypatch.setenv("TEXT_API_KEY", "k")
    monkeypatch.setenv("MAX_CONCURRENT_CONNECTIONS", "1")
    monkeypatch.setenv("TOOL_CALL_PARSER", "mistral")
    assert ServerSettings.from_env().tool_call_parser == "mistral"
    monkeypatch.setenv("TOOL_CALL_PARSER", "no_such_format")
    with pytest.raises(SettingsError, match="TOOL_CALL_PARSER") as raised:
        ServerSettings.from_env()
    assert "hermes, llama3_json, mistral" in str(raised.value) and "pythonic" in str(raised.value)
