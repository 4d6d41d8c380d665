"""`/v1/chat/completions` and `/v1/models` through the official `openai` SDK against a real uvicorn
server on 127.0.0.1: fake engines for the wire format, the real vLLM engine (CPU) for structured outputs."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from yap_cli.loopback import serve_on_loopback
from yap_engines import ChatRequest, FakeEngine, FunctionEngine, InferenceEngine
from yap_engines.adapters.fake import FakeTokenizer, piece_token_id, split_pieces
from yap_engines.chat import render_ids
from yap_server.app import create_app

from .conftest import KEY, RecordingFake, app_for, server_settings

MESSAGES: list[Any] = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": "Say hello."},
]
SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"enum": ["yes", "no"]},
        "ok": {"type": "boolean"},
        "note": {"type": "string", "maxLength": 8},
    },
    "required": ["answer", "ok", "note"],
    "additionalProperties": False,
}


@contextlib.asynccontextmanager
async def openai_server(engine: InferenceEngine, **overrides: Any) -> AsyncIterator[str]:
    """A real server for `engine`; yields its `/v1` base URL."""
    app = app_for({"chat": engine}, **overrides)
    async with serve_on_loopback(app) as port:
        yield f"http://127.0.0.1:{port}/v1"


def sdk(base_url: str, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)


async def until_idle(engine: Any, within_s: float = 1.0) -> int:
    """Poll the engine's running requests until none is left (or `within_s` passes); returns the last count."""
    for _ in range(int(within_s * 100)):
        if engine.num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.01)
    return int(engine.num_unfinished_requests())


def thinking_engine(*pieces: str) -> FunctionEngine:
    async def reply(request: ChatRequest) -> AsyncIterator[str]:
        for piece in pieces:
            yield piece

    return FunctionEngine(reply)


# -- the happy paths ---------------------------------------------------------------------------


async def test_models_and_a_plain_completion() -> None:
    text = "Hello there, it is nice to meet you."
    engine = FakeEngine(text=text, model_id="tiny-chat")
    async with openai_server(engine) as base:
        client = sdk(base)
        models = await client.models.list()
        assert [m.id for m in models.data] == ["tiny-chat"]
        assert models.data[0].owned_by == "yap"
        reply = await client.chat.completions.create(model="tiny-chat", messages=MESSAGES)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(base.removesuffix("/v1") + "/metrics", headers={"X-API-Key": KEY})).text
    assert 'yap_requests_total{status="done"} 1.0' in metrics  # counted like a /ws turn
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == "tiny-chat"
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == text
    assert choice.finish_reason == "stop"
    assert getattr(choice.message, "reasoning_content", None) is None
    prompt_tokens = len(render_ids(engine.tokenizer, MESSAGES))
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == prompt_tokens
    assert reply.usage.completion_tokens == len(split_pieces(text))
    assert reply.usage.total_tokens == prompt_tokens + len(split_pieces(text))


async def test_usage_reports_the_prompt_tokens_served_from_the_prefix_cache() -> None:
    engine = FakeEngine(text="Fine.", cache_block_size=16)
    persona = {"role": "system", "content": "You are a brief and friendly voice assistant. " * 12}
    async with openai_server(engine) as base:
        client = sdk(base)
        first = await client.chat.completions.create(
            model="fake", messages=[persona, {"role": "user", "content": "Hi"}]
        )
        again = await client.chat.completions.create(
            model="fake", messages=[persona, {"role": "user", "content": "Yo"}]
        )
    assert first.usage is not None and again.usage is not None
    assert first.usage.prompt_tokens_details is not None and first.usage.prompt_tokens_details.cached_tokens == 0
    cached = again.usage.prompt_tokens_details.cached_tokens  # type: ignore[union-attr]
    assert cached is not None and 64 <= cached < again.usage.prompt_tokens and cached % 16 == 0


async def test_streaming_chunks_finish_usage_and_done() -> None:
    text = "One two three four five six."
    engine = FakeEngine(text=text)
    # STREAM_FLUSH_MS=0: a chunk per engine delta (coalescing is tests/server/test_coalescing.py's subject)
    async with openai_server(engine, served_model_name="yap-demo", stream_flush_ms=0) as base:
        stream = await sdk(base).chat.completions.create(
            model="yap-demo", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.object == "chat.completion.chunk" and c.model == "yap-demo" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == text
    assert [c.choices[0].finish_reason for c in with_choices][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    assert len(with_choices) >= len(split_pieces(text))  # streamed piece by piece, not in one lump
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == len(split_pieces(text))
    assert all(c.usage is None for c in chunks[:-1])


async def test_the_raw_event_stream_ends_with_done_and_has_no_usage_unless_asked() -> None:
    async with openai_server(FakeEngine(text="Hi there.")) as base:
        async with httpx.AsyncClient() as http:
            body = {"model": "fake", "messages": MESSAGES, "stream": True}
            response = await http.post(f"{base}/chat/completions", json=body, headers={"X-API-Key": KEY})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in p for p in parsed)
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop" and parsed[-1]["choices"][0]["delta"] == {}


async def test_a_line_reader_built_on_splitlines_reads_text_with_unicode_line_breaks() -> None:
    text = "One\u2028two\u2029three\x85four."  # line breaks to str.splitlines, not to SSE
    async with openai_server(FakeEngine(text=text)) as base:
        async with httpx.AsyncClient() as http:
            body = {"model": "fake", "messages": MESSAGES, "stream": True}
            async with http.stream("POST", f"{base}/chat/completions", json=body, headers={"X-API-Key": KEY}) as r:
                lines = [line async for line in r.aiter_lines() if line.startswith("data: {")]
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == text


async def test_reasoning_goes_to_reasoning_content_streaming_and_not() -> None:
    engine = thinking_engine("<th", "ink>Let me ", "think.</th", "ink>The answer", " is 42.")
    async with openai_server(engine) as base:
        client = sdk(base)
        reply = await client.chat.completions.create(model="fake", messages=MESSAGES)
        stream = await client.chat.completions.create(model="fake", messages=MESSAGES, stream=True)
        deltas = [chunk.choices[0].delta async for chunk in stream if chunk.choices]
    message = reply.choices[0].message
    assert message.content == "The answer is 42."
    assert getattr(message, "reasoning_content", None) == "Let me think."
    assert "".join(d.content or "" for d in deltas) == "The answer is 42."
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "Let me think."


async def test_a_reply_cut_while_thinking_never_leaks_into_content() -> None:
    engine = thinking_engine("<think>", "still", " thinking", " about", " it", "</think>", "Answer.")
    async with openai_server(engine) as base:
        reply = await sdk(base).chat.completions.create(model="fake", messages=MESSAGES, max_tokens=3)
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == ""
    assert getattr(reply.choices[0].message, "reasoning_content", None) == "still thinking"


class ThinkingTemplate(FakeTokenizer):
    """A chat template that opens the think block in the prompt unless `enable_thinking` is false."""

    def apply_chat_template(
        self, messages: Any, add_generation_prompt: bool = True, tokenize: bool = True, **kwargs: Any
    ) -> Any:
        text = super().apply_chat_template(messages, add_generation_prompt, tokenize=False)
        if add_generation_prompt and kwargs.get("enable_thinking", True):
            text += "<think>\n"
        return self.encode(text) if tokenize else text


async def test_a_template_that_opens_thinking_and_chat_template_kwargs() -> None:
    prompts: list[str] = []
    template = ThinkingTemplate()

    async def reply(request: ChatRequest) -> AsyncIterator[str]:
        prompts.append(template.decode(request.prompt_token_ids))
        for piece in ("Mulling", " it", "</think>", "Done."):
            yield piece

    engine = FunctionEngine(reply, tokenizer=template)
    async with openai_server(engine) as base:
        client = sdk(base)
        stream = await client.chat.completions.create(model="fake", messages=MESSAGES, stream=True)
        deltas = [chunk.choices[0].delta async for chunk in stream if chunk.choices]
        unthinking = await client.chat.completions.create(
            model="fake", messages=MESSAGES, extra_body={"chat_template_kwargs": {"enable_thinking": False}}
        )
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "Mulling it"
    assert "".join(d.content or "" for d in deltas) == "Done."
    assert prompts[0].endswith("<think>\n") and not prompts[1].endswith("<think>\n")
    # a whole reply is split exactly: a closing tag without an opening one still ends the reasoning
    assert getattr(unthinking.choices[0].message, "reasoning_content", None) == "Mulling it"
    assert unthinking.choices[0].message.content == "Done."


async def test_include_reasoning_false_drops_it() -> None:
    engine = thinking_engine("<think>", "hidden", "</think>", "shown")
    async with openai_server(engine) as base:
        reply = await sdk(base).chat.completions.create(
            model="fake", messages=MESSAGES, extra_body={"include_reasoning": False}
        )
    assert reply.choices[0].message.content == "shown"
    assert getattr(reply.choices[0].message, "reasoning_content", None) is None


# -- structured outputs and sampling -----------------------------------------------------------


async def test_structured_outputs_reach_the_engine() -> None:
    engine = RecordingFake()
    json_schema = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}
    async with openai_server(engine) as base:
        client = sdk(base)
        reply = await client.chat.completions.create(model="fake", messages=MESSAGES, response_format=json_schema)
        jsonschema.validate(json.loads(reply.choices[0].message.content or ""), SCHEMA)
        picked = await client.chat.completions.create(
            model="fake", messages=MESSAGES, response_format={"type": "choice", "choice": ["red", "green"]}
        )
        guided = await client.chat.completions.create(
            model="fake", messages=MESSAGES, extra_body={"guided_choice": ["up", "down"]}
        )
        obj = await client.chat.completions.create(
            model="fake", messages=MESSAGES, response_format={"type": "json_object"}
        )
        vllm_style = await client.chat.completions.create(
            model="fake", messages=MESSAGES, extra_body={"structured_outputs": {"choice": ["on", "off"]}}
        )
    assert picked.choices[0].message.content in ("red", "green")
    assert guided.choices[0].message.content in ("up", "down")
    assert json.loads(obj.choices[0].message.content or "") == {}
    assert vllm_style.choices[0].message.content in ("on", "off")
    kinds = [(r.structured_output.kind, r.structured_output.spec) for r in engine.requests if r.structured_output]
    assert kinds == [
        ("json_schema", SCHEMA),
        ("choice", ("red", "green")),
        ("choice", ("up", "down")),
        ("json_object", None),
        ("choice", ("on", "off")),
    ]


async def test_token_ids_on_request_like_vllm() -> None:
    text = "Four little pieces here."
    ids = [piece_token_id(piece) for piece in split_pieces(text)]
    async with openai_server(thinking_engine("<think>", "hm", "</think>", *split_pieces(text))) as base:
        client = sdk(base)
        extra = {"return_token_ids": True}
        reply = await client.chat.completions.create(model="fake", messages=MESSAGES, extra_body=extra)
        stream = await client.chat.completions.create(model="fake", messages=MESSAGES, stream=True, extra_body=extra)
        chunks = [c.model_dump() async for c in stream]
        plain = await client.chat.completions.create(model="fake", messages=MESSAGES)
    thinking_ids = [piece_token_id(p) for p in ("<think>", "hm", "</think>")]
    assert reply.choices[0].model_dump()["token_ids"] == thinking_ids + ids
    assert [t for c in chunks for t in c["choices"][0]["token_ids"]] == thinking_ids + ids
    assert "token_ids" not in plain.choices[0].model_dump()


async def test_sampling_fields_reach_the_engine() -> None:
    engine = RecordingFake(text="ok")
    async with openai_server(engine) as base:
        await sdk(base).chat.completions.create(
            model="fake",
            messages=MESSAGES,
            temperature=0.2,
            top_p=0.5,
            max_completion_tokens=7,
            stop="END",
            seed=3,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            logit_bias={"17": -100},
            extra_body={"top_k": 20, "repetition_penalty": 1.2, "min_p": 0.1},
        )
    s = engine.requests[0].sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p, s.max_tokens) == (0.2, 0.5, 20, 0.1, 7)
    assert (s.stop, s.seed, s.presence_penalty, s.frequency_penalty) == (("END",), 3, 0.5, -0.5)
    assert (s.repetition_penalty, s.logit_bias) == (1.2, {17: -100.0})


async def test_guided_json_stays_strict_json_when_the_grammar_lets_control_characters_through() -> None:
    engine = thinking_engine('{"a": "x', "\x08y\n\t", '", "b": "q\\"', '\x01"}')
    async with openai_server(engine) as base:
        client = sdk(base)
        fmt: Any = {"type": "json_object"}
        reply = await client.chat.completions.create(model="fake", messages=MESSAGES, response_format=fmt)
        stream = await client.chat.completions.create(model="fake", messages=MESSAGES, response_format=fmt, stream=True)
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    expected = {"a": "x\by\n\t", "b": 'q"\x01'}
    assert json.loads(reply.choices[0].message.content or "") == expected  # strict parse
    assert json.loads(streamed) == expected


# -- errors ------------------------------------------------------------------------------------


async def test_errors_come_in_the_openai_shape_and_the_sdk_raises_the_right_class() -> None:
    engine = FakeEngine(text="x")
    async with openai_server(engine) as base:
        client = sdk(base)
        with pytest.raises(openai.AuthenticationError) as auth:
            await sdk(base, key="wrong").chat.completions.create(model="fake", messages=MESSAGES)
        assert auth.value.status_code == 401 and auth.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            await sdk(base, key="wrong").models.list()
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="fake", messages=MESSAGES, temperature=3)
        assert bad.value.param == "temperature" and "out of range" in bad.value.message
        with pytest.raises(openai.BadRequestError) as cap:
            await client.chat.completions.create(model="fake", messages=MESSAGES, max_completion_tokens=10_000)
        assert cap.value.param == "max_completion_tokens" and "CHAT_MAX_OUT" in cap.value.message
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert missing.value.code == "model_not_found" and "use one of: fake" in missing.value.message
        with pytest.raises(openai.BadRequestError) as many:
            await client.chat.completions.create(model="fake", messages=MESSAGES, n=2)
        assert many.value.param == "n"
        with pytest.raises(openai.BadRequestError) as role:
            await client.chat.completions.create(model="fake", messages=[{"role": "robot", "content": "x"}])
        assert role.value.param == "messages.0.role"
        with pytest.raises(openai.BadRequestError) as fmt:
            await client.chat.completions.create(
                model="fake", messages=MESSAGES, response_format={"type": "choice", "choice": []}
            )
        assert fmt.value.param == "response_format.choice"
        with pytest.raises(openai.BadRequestError) as unsupported:  # the fake cannot do regex: refused, not dropped
            await client.chat.completions.create(
                model="fake", messages=MESSAGES, response_format={"type": "regex", "regex": "[0-9]+"}
            )
        assert unsupported.value.code == "unsupported_parameter"
        async with httpx.AsyncClient() as http:
            raw = await http.post(f"{base}/chat/completions", content=b"{not json", headers={"X-API-Key": KEY})
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "invalid_json" and "not valid JSON" in error["message"]


async def test_a_routers_unknown_fields_are_accepted_logged_once_and_typed_fields_still_checked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`vllm-router` adds `no_stop_trim` (and others): accepted and ignored as vLLM does, logged once per
    field; a known field with the wrong type is still refused, naming it."""
    extra = {"no_stop_trim": True, "rid": "r-1"}
    async with openai_server(FakeEngine(text="one two")) as base:
        client = sdk(base)
        with caplog.at_level("WARNING", logger="yap.app"):
            for _ in range(3):
                reply = await client.chat.completions.create(model="fake", messages=MESSAGES, extra_body=extra)
                assert reply.choices[0].message.content == "one two"
        with pytest.raises(openai.BadRequestError) as typed:
            await client.chat.completions.create(
                model="fake", messages=MESSAGES, extra_body={"no_stop_trim": True, "stream_options": "yes"}
            )
        assert typed.value.param == "stream_options" and typed.value.code == "invalid_value"
        with pytest.raises(openai.BadRequestError) as ranged:
            await client.chat.completions.create(model="fake", messages=MESSAGES, extra_body={"top_k": "many"})
        assert ranged.value.param == "top_k"
    logged = [r.getMessage() for r in caplog.records if "ignoring unknown request fields" in r.getMessage()]
    assert len(logged) == 1 and "no_stop_trim" in logged[0] and "rid" in logged[0]


async def test_a_prompt_over_the_budget_is_refused() -> None:
    async with openai_server(FakeEngine(text="x"), chat_max_len=5) as base:
        with pytest.raises(openai.BadRequestError) as long:
            await sdk(base).chat.completions.create(model="fake", messages=MESSAGES)
    assert long.value.code == "context_length_exceeded" and "CHAT_MAX_LEN" in long.value.message


async def test_engine_failures_before_and_during_the_stream() -> None:
    engine = FakeEngine(text="a b c d e f g", fail_after=3)
    async with openai_server(engine) as base:
        client = sdk(base)
        with pytest.raises(openai.InternalServerError) as failed:
            await client.chat.completions.create(model="fake", messages=MESSAGES)
        assert failed.value.status_code == 500 and failed.value.code == "engine_error"
        stream = await client.chat.completions.create(model="fake", messages=MESSAGES, stream=True)
        got = []
        with pytest.raises(openai.APIError, match="failed after 3 tokens"):
            async for chunk in stream:
                got.extend(c.delta.content for c in chunk.choices if c.delta.content)
        assert "".join(got) == "a b c"
        engine.kill("gone")
        with pytest.raises(openai.InternalServerError) as dead:
            await client.chat.completions.create(model="fake", messages=MESSAGES)
        assert dead.value.status_code == 503 and dead.value.code == "engine_unavailable"
    assert engine.num_unfinished_requests() == 0


async def test_chat_completions_without_a_chat_model_is_503() -> None:
    app = create_app(server_settings(deploy_mode="tool"), engines={"tool": FakeEngine()})
    async with serve_on_loopback(app) as port:
        client = sdk(f"http://127.0.0.1:{port}/v1")
        assert (await client.models.list()).data == []
        with pytest.raises(openai.InternalServerError) as absent:
            await client.chat.completions.create(model="fake", messages=MESSAGES)
    assert absent.value.status_code == 503 and "DEPLOY_MODE" in absent.value.message


# -- cancellation ------------------------------------------------------------------------------


async def test_a_client_that_drops_the_stream_aborts_the_engine_request() -> None:
    engine = FakeEngine(text="word " * 200, tokens_per_s=20)  # 150 tokens take 7.5 s unless aborted
    async with openai_server(engine) as base, httpx.AsyncClient(timeout=10) as http:
        body = {"model": "fake", "messages": MESSAGES, "stream": True, "max_tokens": 150}
        async with http.stream("POST", f"{base}/chat/completions", json=body, headers={"X-API-Key": KEY}) as reply:
            lines = reply.aiter_lines()
            while not (await anext(lines)).startswith('data: {"id"'):
                pass
            content = await anext(lines) or await anext(lines)
            assert '"content":"' in content
            assert engine.num_unfinished_requests() == 1
        # leaving the block closes the connection mid-stream
        assert await until_idle(engine) == 0


async def test_a_client_that_gives_up_on_a_plain_request_aborts_it() -> None:
    engine = FakeEngine(text="word " * 200, tokens_per_s=20)  # 150 tokens take 7.5 s unless aborted
    async with openai_server(engine) as base:
        client = sdk(base)
        waiting = asyncio.create_task(client.chat.completions.create(model="fake", messages=MESSAGES))
        for _ in range(500):
            if engine.num_unfinished_requests():
                break
            await asyncio.sleep(0.01)
        assert engine.num_unfinished_requests() == 1
        waiting.cancel()  # the SDK closes its connection
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        assert await until_idle(engine) == 0


# -- the real engine ---------------------------------------------------------------------------


@pytest.mark.vllm
async def test_vllm_structured_outputs_through_the_sdk(vllm_engine: Any) -> None:
    async with openai_server(vllm_engine, served_model_name="demo") as base:
        client = sdk(base)
        fmt: Any = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}
        stream = await client.chat.completions.create(
            model="demo",
            messages=MESSAGES,
            response_format=fmt,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=120,
            temperature=0.8,
            seed=7,
        )
        chunks = [chunk async for chunk in stream]
        choice: Any = {"type": "choice", "choice": ["left", "right", "stay"]}
        picked = await client.chat.completions.create(
            model="demo",
            messages=MESSAGES,
            response_format=choice,
            max_tokens=20,
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    jsonschema.validate(json.loads(text), SCHEMA)  # strict parse: control characters were escaped
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert picked.choices[0].message.content in ("left", "right", "stay")
    assert await until_idle(vllm_engine, within_s=5) == 0


async def test_a_raw_token_prompt_on_v1_completions_continues_the_reply_it_ends_with() -> None:
    """`/v1/completions` with `prompt: [ids]` (how a turn resumes on another replica): a prompt ending with
    the first tokens of the reply streams the rest of it, as text-completion chunks with their ids."""
    engine = FakeEngine(seed=5)
    prompt = render_ids(engine.tokenizer, MESSAGES)
    whole = engine.reply_text(ChatRequest("w", prompt))
    pieces = split_pieces(whole)
    head = [piece_token_id(p) for p in pieces[:3]]
    body = {"model": "fake", "prompt": [*prompt, *head], "stream": True, "return_token_ids": True, "rid": "x"}
    async with openai_server(engine) as base, httpx.AsyncClient(timeout=30) as http:
        async with http.stream("POST", f"{base}/completions", json=body, headers={"X-API-Key": KEY}) as response:
            assert response.status_code == 200
            events = [json.loads(line[6:]) for line in [x async for x in response.aiter_lines()] if line[6:7] == "{"]
        refused = await http.post(
            f"{base}/completions", json={"model": "fake", "prompt": "text"}, headers={"X-API-Key": KEY}
        )
    assert {e["object"] for e in events} == {"text_completion"}
    assert "".join(e["choices"][0]["text"] for e in events) == "".join(pieces[3:])
    assert [t for e in events for t in e["choices"][0].get("token_ids", [])] == [piece_token_id(p) for p in pieces[3:]]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "prompt"
