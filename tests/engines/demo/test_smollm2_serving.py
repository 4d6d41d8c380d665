"""The embedded default (SmolLM2-135M-Instruct) served by Yap on real vLLM (CPU build here), over real sockets.

Few tests, one shared engine (`smollm2_engine`), short replies: the model decodes at roughly 10-15 tokens/s
on two shared cores. What the engine received is checked through `RecordingEngine`, never by asking a
135M model to recall anything.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets

from yap_cli.loopback import serve_on_loopback
from yap_engines.chat import render_ids
from yap_server.app import create_app
from yap_server.settings import ServerSettings

from .support import KEY, RecordingEngine, WsTalker

pytestmark = [pytest.mark.real_model, pytest.mark.vllm]

PERSONA = "You are a helpful, brief voice assistant. Answer in one short sentence."
GREEDY = {"temperature": 0.0}


@asynccontextmanager
async def yap_server(engine: RecordingEngine, **overrides: Any) -> AsyncIterator[int]:
    settings = ServerSettings(
        text_api_key=KEY, max_concurrent_connections=4, deploy_mode="chat", ws_idle_timeout_s=120, **overrides
    )
    async with serve_on_loopback(create_app(settings, engines={"chat": engine})) as port:
        yield port


@asynccontextmanager
async def talker(port: int) -> AsyncIterator[WsTalker]:
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws?api_key={KEY}") as connection:
        talk = WsTalker(connection)
        await talk.start(PERSONA)
        yield talk


async def test_a_factual_question_is_answered_correctly_over_ws(smollm2_engine: Any) -> None:
    engine = RecordingEngine(smollm2_engine)
    async with yap_server(engine) as port, talker(port) as talk:
        done = await talk.turn("t1", "What's the capital of France?", max_tokens=24, **GREEDY)
    assert done["type"] == "done", done
    assert "Paris" in done["payload"]["text"]
    assert done["payload"]["usage"]["completion_tokens"] <= 24


async def test_the_fifth_turn_prompt_holds_the_four_turns_as_the_session_kept_them(smollm2_engine: Any) -> None:
    engine = RecordingEngine(smollm2_engine)
    said = ["My name is Ana.", "I live in Lisbon.", "I like green tea.", "My cat is called Miso."]
    async with yap_server(engine) as port, talker(port) as talk:
        replies = []
        for number, utterance in enumerate(said, start=1):
            done = await talk.turn(f"t{number}", utterance, max_tokens=16, **GREEDY)
            assert done["type"] == "done", done
            replies.append(done["payload"]["text"])
        fifth = await talk.turn("t5", "What is my name?", max_tokens=16, **GREEDY)
    assert fifth["type"] == "done", fifth
    expected = [{"role": "system", "content": PERSONA}]
    for utterance, reply in zip(said, replies, strict=True):
        expected += [{"role": "user", "content": utterance}, {"role": "assistant", "content": reply}]
    expected.append({"role": "user", "content": "What is my name?"})
    request = engine.requests[-1]
    assert [dict(m) for m in request.messages] == expected
    # the token ids the engine ran are exactly those messages through the model's ChatML template
    assert list(request.prompt_token_ids) == render_ids(smollm2_engine.tokenizer, expected)
    print(f"\nturn 5 'What is my name?' -> {fifth['payload']['text']!r}")


async def test_history_over_budget_drops_whole_oldest_turns_in_what_the_engine_receives(smollm2_engine: Any) -> None:
    """With a small history budget the prompt keeps the persona and only the newest whole turns."""
    engine = RecordingEngine(smollm2_engine)
    said = ["My name is Ana.", "I live in Lisbon.", "I like green tea.", "My cat is called Miso."]
    async with yap_server(engine, history_max_tokens=60, history_trim_ratio=0.7) as port, talker(port) as talk:
        for number, utterance in enumerate(said, start=1):
            done = await talk.turn(f"t{number}", utterance, max_tokens=8, **GREEDY)
            assert done["type"] == "done", done
    sent = [dict(m) for m in engine.requests[-1].messages]
    assert sent[0] == {"role": "system", "content": PERSONA}
    users = [m["content"] for m in sent if m["role"] == "user"]
    assert users[-1] == said[-1] and said[0] not in users  # the oldest turns went, whole
    assert users == said[len(said) - len(users) :]  # what stayed is the newest turns, in order
    history_tokens = len(render_ids(smollm2_engine.tokenizer, sent[1:], add_generation_prompt=False))
    assert history_tokens <= 60


async def test_after_a_barge_in_the_next_prompt_holds_only_the_spoken_part(smollm2_engine: Any) -> None:
    engine = RecordingEngine(smollm2_engine)
    async with yap_server(engine) as port, talker(port) as talk:
        story = "Tell me a long story about a dragon."
        await talk.send("message", "t1", user_utterance=story, sampling={"max_tokens": 48, **GREEDY})
        streamed = ""
        while len(streamed.split()) < 4:
            frame = await talk.recv()
            assert frame["type"] in ("ack", "token"), frame
            if frame["type"] == "token":
                streamed += frame["payload"]["text"]
        spoken = streamed.split()[0]  # the user heard only the first word
        await talk.send("cancel", "t1", spoken_text=spoken)
        cancelled = (await talk.until_terminal("t1"))[-1]
        assert cancelled["type"] == "cancelled", cancelled
        done = await talk.turn("t2", "What happened next?", max_tokens=4, **GREEDY)
    assert done["type"] == "done", done
    assert [dict(m) for m in engine.requests[-1].messages] == [
        {"role": "system", "content": PERSONA},
        {"role": "user", "content": "Tell me a long story about a dragon."},
        {"role": "assistant", "content": spoken},
        {"role": "user", "content": "What happened next?"},
    ]
    assert list(engine.requests[-1].prompt_token_ids) == render_ids(
        smollm2_engine.tokenizer, engine.requests[-1].messages
    )


async def test_json_schema_output_through_the_openai_sdk_is_valid_and_right(smollm2_engine: Any) -> None:
    from openai import AsyncOpenAI

    engine = RecordingEngine(smollm2_engine)
    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string"}},
        "required": ["capital"],
        "additionalProperties": False,
    }
    async with yap_server(engine) as port:
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=120)
        model = (await client.models.list()).data[0].id
        completion = await client.chat.completions.create(
            model=model,
            messages=[
                {"role": "system", "content": "Answer with JSON."},
                {"role": "user", "content": "What's the capital of France?"},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "capital", "schema": schema, "strict": True},
            },
            temperature=0,
            max_tokens=24,
        )
        await client.close()
    content = completion.choices[0].message.content
    assert content is not None
    answer = json.loads(content)  # strict JSON
    assert set(answer) == {"capital"}
    assert "Paris" in answer["capital"]
    assert engine.requests[-1].structured_output is not None
