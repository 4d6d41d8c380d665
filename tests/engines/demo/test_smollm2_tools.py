"""Guided tool calls on the embedded default (SmolLM2-135M-Instruct, real vLLM on CPU) through the OpenAI SDK:
with `tool_choice: "required"` (and a named function) every call parses and validates against its schema,
and the streamed calls equal the whole ones at temperature 0. A bounded slice of
`benchmarks/tool_calls_smollm2.py` (which runs 50 prompts and reports the tool picked)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

from yap_cli.loopback import serve_on_loopback
from yap_server.app import create_app
from yap_server.settings import ServerSettings

from .support import KEY

pytestmark = [pytest.mark.real_model, pytest.mark.vllm]


def _benchmark() -> Any:
    """The benchmark module (its tools, prompts and streamed-call reader), loaded from its file."""
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "tool_calls_smollm2.py"
    spec = importlib.util.spec_from_file_location("tool_calls_smollm2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _benchmark()
PROMPTS, TOOLS = BENCH.PROMPTS, BENCH.TOOLS
required_call, streamed_calls = BENCH.required_call, BENCH.streamed_calls
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}


async def test_required_and_named_calls_parse_and_validate_and_stream_the_same(smollm2_engine: Any) -> None:
    settings = ServerSettings(text_api_key=KEY, max_concurrent_connections=4, deploy_mode="chat")
    lines = [PROMPTS[0], PROMPTS[20], PROMPTS[40]]  # one per tool
    async with serve_on_loopback(create_app(settings, engines={"chat": smollm2_engine})) as port:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=120)
        model = (await client.models.list()).data[0].id
        for line, _expected in lines:
            kwargs = required_call(model, line)
            reply = await client.chat.completions.create(**kwargs)
            assert reply.choices[0].finish_reason == "tool_calls", reply.choices[0].message.content
            (call,) = reply.choices[0].message.tool_calls or []
            jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
            assert await streamed_calls(client, **kwargs) == [(call.function.name, call.function.arguments)]
        named = await client.chat.completions.create(
            **{**kwargs, "tool_choice": {"type": "function", "function": {"name": "book_table"}}}
        )
        assert named.choices[0].finish_reason == "tool_calls", named.choices[0].message.content
        (call,) = named.choices[0].message.tool_calls or []
        assert call.function.name == "book_table"
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS["book_table"])
