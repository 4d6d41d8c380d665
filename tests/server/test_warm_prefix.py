"""A warm's token ids are a strict token prefix of the prompt the final message renders (property test).

Over utterances (words of letters, digits, punctuation and non-ASCII), histories, and chat templates:
the fake tokenizer's ChatML, the demo model's byte-level BPE with ChatML, SmolLM2's real tokenizer and
template, and a Llama-3-style template on the demo tokenizer. The final text keeps the interim
transcript's stable words and replaces the last, still-moving one with anything.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yap_engines import Sampling
from yap_engines.adapters.fake import FakeTokenizer
from yap_engines.chat import load_tokenizer, shared_prefix_length
from yap_server.ws.session import Persona, Session, TurnOptions
from yap_server.ws.warm import CacheCover, stable_text, warm_prompt

LLAMA3_TEMPLATE = (
    "{{ '<|endoftext|>' }}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '<think>\n\n' + m['content'] | trim"
    " + '<|im_end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant<think>\n\n' }}{% endif %}"
)
"""Llama 3's shape (a BOS first, the header, a blank line, the trimmed content, an end token), spelled with
the demo tokenizer's special tokens."""

BUDGET = 100_000

WORD = st.text(
    alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789.,?!'-\u00e9\u00fc\u3042\U0001f600")),
    min_size=1,
    max_size=8,
)
UTTERANCE = st.lists(WORD, min_size=1, max_size=8).map(" ".join)
HISTORY = st.lists(st.tuples(UTTERANCE, UTTERANCE), max_size=2)


@pytest.fixture(scope="module", params=["fake", "demo", "smollm2", "llama3_style"])
def tokenizer(request: pytest.FixtureRequest, demo_model_dir: Path) -> Any:
    if request.param == "fake":
        return FakeTokenizer()
    if request.param == "smollm2":
        return load_tokenizer(str(request.getfixturevalue("smollm2_dir")))
    demo = load_tokenizer(str(demo_model_dir))
    if request.param == "llama3_style":
        demo = copy.deepcopy(demo)
        demo.chat_template = LLAMA3_TEMPLATE
    return demo


def session_with(tokenizer: Any, history: list[tuple[str, str]]) -> Session:
    messages = [
        {"role": role, "content": text}
        for pair in history
        for role, text in zip(("user", "assistant"), pair, strict=True)
    ]
    persona = Persona("You are a brief voice assistant.", "cheerful")
    return Session.create("s", persona, tokenizer, messages, Sampling(), TurnOptions())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=HISTORY, interim=UTTERANCE, revised=WORD, more=st.lists(WORD, max_size=3).map(" ".join))
def test_the_warm_is_a_strict_token_prefix_of_the_final_prompt(
    tokenizer: Any, history: list[tuple[str, str]], interim: str, revised: str, more: str
) -> None:
    session = session_with(tokenizer, history)
    stable = stable_text(interim)
    _, warm = warm_prompt(session, tokenizer, BUDGET, BUDGET, 0.7, partial=stable)
    final_text = " ".join(part for part in (stable, revised, more) if part)
    session.history.add("user", final_text)
    final = session.build_prompt(tokenizer, BUDGET, BUDGET, 0.7).token_ids
    assert len(warm) < len(final)
    assert list(final[: len(warm)]) == list(warm), (interim, final_text)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=HISTORY, reply=UTTERANCE, utterance=UTTERANCE)
def test_the_warm_before_an_utterance_is_a_prefix_of_the_next_prompt(
    tokenizer: Any, history: list[tuple[str, str]], reply: str, utterance: str
) -> None:
    """The automatic warms (after `start`, after a turn) and a prefill during a reply (role assistant)."""
    session = session_with(tokenizer, history)
    _, before_user = warm_prompt(session, tokenizer, BUDGET, BUDGET, 0.7)
    session.history.add("user", "tell me something")
    _, during_reply = warm_prompt(session, tokenizer, BUDGET, BUDGET, 0.7, role="assistant")
    session.history.add("assistant", reply)
    session.history.add("user", utterance)
    final = session.build_prompt(tokenizer, BUDGET, BUDGET, 0.7).token_ids
    for warm in (before_user, during_reply):
        assert len(warm) < len(final) and list(final[: len(warm)]) == list(warm)


@pytest.mark.parametrize(
    ("interim", "stable"),
    [("what is the weather in Bos", "what is the weather in"), ("  hello  ", ""), ("one", ""), ("a b ", "a")],
)
def test_the_stable_text_drops_the_last_word(interim: str, stable: str) -> None:
    assert stable_text(interim) == stable


# -- the cache cover: which warms add a whole block ------------------------------------------------------

token_lists = st.lists(st.integers(0, 3), max_size=60)


@given(a=token_lists, b=token_lists)
def test_common_prefix_is_the_longest_shared_start(a: list[int], b: list[int]) -> None:
    n = shared_prefix_length(a, b)
    assert a[:n] == b[:n]
    assert n == min(len(a), len(b)) or a[n] != b[n]
    assert shared_prefix_length(tuple(a), b) == n  # lists and tuples alike


@given(held=token_lists, ids=token_lists, block=st.integers(1, 8))
def test_a_warm_adds_something_exactly_when_it_has_a_whole_block_the_cover_lacks(
    held: list[int], ids: list[int], block: int
) -> None:
    cover = CacheCover(block)
    cover.record(held)
    assert len(cover.ids) % block == 0 and list(cover.ids) == held[: len(cover.ids)]
    cached = {i for i in range(block, len(cover.ids) + 1, block)}  # whole-block prefixes the cache holds
    cached = {n for n in cached if ids[:n] == list(cover.ids[:n])}
    wanted = set(range(block, len(ids) + 1, block))  # the whole-block prefixes a warm of ids would cache
    assert cover.adds(ids) == bool(wanted - cached)
    assert cover.held(ids) == max(cached & wanted, default=0)
