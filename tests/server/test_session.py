"""Session pieces: history trimming with hysteresis, sampling layering, banned-phrase bias."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from yap_engines import ChatRequest, FunctionEngine, Sampling
from yap_engines.adapters.fake import FakeTokenizer
from yap_server.app import banned_phrase_bias
from yap_server.ws.session import History, Persona, Session, TurnOptions

from .conftest import Probe, served, server_settings


def history_of(turns: int, tokenizer: Any) -> History:
    history = History(tokenizer)
    for i in range(turns):
        history.add("user", f"question number {i} " + "word " * 20)
        history.add("assistant", f"answer number {i} " + "word " * 20)
    return history


def test_history_is_trimmed_by_whole_turns_down_to_the_lower_mark() -> None:
    history = history_of(10, FakeTokenizer())
    per_turn = history.tokens // 10
    budget = per_turn * 8
    dropped = history.trim(budget, ratio=0.5)
    assert history.tokens <= budget * 0.5 < history.tokens + per_turn  # trimmed to the mark, not far below
    assert dropped == 10 - history.turn_count
    assert history.messages()[0]["content"].startswith(f"question number {dropped}")
    # Under budget again: the next few turns do not trim at all, so the prompt prefix stays put.
    for i in range(3):
        history.add("user", "more " * 20)
        assert history.trim(budget, ratio=0.5) == 0, i


def test_the_newest_turn_is_never_trimmed() -> None:
    history = History(FakeTokenizer())
    history.add("user", "word " * 500)
    assert history.trim(10, ratio=0.5) == 0
    assert history.turn_count == 1


def test_replace_last_assistant_recounts_tokens() -> None:
    history = history_of(1, FakeTokenizer())
    before = history.tokens
    assert history.replace_last_assistant("short")
    assert history.tokens < before
    assert history.messages()[-1] == {"role": "assistant", "content": "short"}


def test_build_prompt_fits_the_budget_and_keeps_the_persona(demo_tokenizer: Any) -> None:
    session = Session.create("s", Persona("Be brief.", "calm", None), demo_tokenizer, [], Sampling(), TurnOptions())
    for i in range(40):
        session.history.add("user", f"tell me about topic {i} " * 5)
        session.history.add("assistant", f"topic {i} is nice " * 5)
    ids = session.build_prompt(demo_tokenizer, prompt_budget=600, history_budget=500, trim_ratio=0.7).token_ids
    text = demo_tokenizer.decode(ids)
    assert len(ids) <= 600
    assert text.startswith("<|im_start|>system\nBe brief.\nYour personality: calm.")
    assert "topic 39 is nice" in text and "topic 0 " not in text


def test_banned_phrases_become_a_logit_bias(tmp_path: Path, demo_tokenizer: Any) -> None:
    path = tmp_path / "bias.json"
    path.write_text(json.dumps({"As an AI": -100, "sorry": -5}))
    bias = banned_phrase_bias(server_settings(chat_logit_bias_file=path), demo_tokenizer)
    for token_id in demo_tokenizer.encode(" As an AI", add_special_tokens=False):
        assert bias[token_id] == -100
    sorry = set(demo_tokenizer.encode("sorry", add_special_tokens=False))
    ai = set(demo_tokenizer.encode(" As an AI", add_special_tokens=False))
    for token_id in sorry:
        assert bias[token_id] == (-100 if token_id in ai else -5)  # a shared token keeps the stronger bias


def test_the_banned_phrase_bias_reaches_the_engine(tmp_path: Path, demo_tokenizer: Any) -> None:
    seen: list[Sampling] = []

    async def pieces(request: ChatRequest) -> AsyncIterator[str]:
        seen.append(request.sampling)
        yield "ok"

    path = tmp_path / "bias.json"
    path.write_text(json.dumps({"As an AI": -100}))
    engine = FunctionEngine(pieces, tokenizer=demo_tokenizer)
    with served(engine, chat_logit_bias_file=path) as client, client.websocket_connect("/ws?api_key=test-key") as ws:
        probe = Probe(ws)
        probe.start(utterance="hi", rid="t1")
        probe.until_terminal("t1")
    expected = set(demo_tokenizer.encode("As an AI", add_special_tokens=False))
    assert seen[0].logit_bias is not None and expected <= set(seen[0].logit_bias)
