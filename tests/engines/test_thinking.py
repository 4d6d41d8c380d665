from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from yap_engines.thinking import (
    ThinkSplit,
    ThinkSplitter,
    prompt_ids_open_thinking,
    prompt_opens_thinking,
    split_thinking,
)

PIECES = st.sampled_from(["<think>", "</think>", "<", "/", "think", ">", "a", "b c", " ", "\n", "é", "<thi", "nk>"])


def replies(max_closes: int = 1) -> st.SearchStrategy[str]:
    return st.lists(PIECES, max_size=14).map("".join).filter(lambda t: t.count("</think>") <= max_closes)


@st.composite
def chunked(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=8)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def stream(chunks: list[str], **options: bool | None) -> ThinkSplit:
    splitter = ThinkSplitter(**options)  # type: ignore[arg-type]
    out = ThinkSplit()
    for chunk in chunks:
        out = out + splitter.feed(chunk)
    return out + splitter.finish()


@given(st.data(), replies())
def test_any_chunking_gives_the_one_shot_split(data: st.DataObject, text: str) -> None:
    assert stream(data.draw(chunked(text))) == split_thinking(text)


@given(st.data(), replies())
def test_a_prefilled_think_block_reads_as_reasoning_until_the_close(data: st.DataObject, text: str) -> None:
    assert stream(data.draw(chunked(text)), starts_in_reasoning=True) == split_thinking("<think>" + text)


@given(st.data(), st.text(alphabet="ab <>/\n", max_size=30).filter(lambda t: "think>" not in t))
def test_plain_answers_stream_without_being_held(data: st.DataObject, text: str) -> None:
    splitter = ThinkSplitter(starts_in_reasoning=False)
    chunks = data.draw(chunked(text))
    streamed = "".join(splitter.feed(chunk).content for chunk in chunks)
    # Only a possible opening tag at the very start may be held back.
    assert text.startswith(streamed)
    assert streamed + splitter.finish().content == text


def test_missing_opening_tag() -> None:
    assert split_thinking("plan it</think>Sure!") == ThinkSplit("plan it", "Sure!")
    assert stream(list("plan it</think>Sure!")) == ThinkSplit("plan it", "Sure!")


def test_text_before_the_last_close_is_reasoning_in_one_shot() -> None:
    assert split_thinking("a</think>b</think>c") == ThinkSplit("a</think>b", "c")


def test_an_unclosed_block_is_all_reasoning() -> None:
    assert split_thinking("  <think>still going") == ThinkSplit("still going", "")
    assert stream(["  <thi", "nk>still", " going"]) == ThinkSplit("still going", "")


def test_reasoning_streams_before_the_close_arrives() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("<think>step one, ") == ThinkSplit("step one, ", "")
    assert splitter.feed("step two</th") == ThinkSplit("step two", "")
    assert splitter.feed("ink>Answer") == ThinkSplit("", "Answer")


def test_prompt_opens_thinking() -> None:
    assert prompt_opens_thinking("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_prompt_ids_open_thinking_reads_the_tail_of_a_real_template(demo_tokenizer: Any) -> None:
    messages = [{"role": "user", "content": "hi " * 50}]
    plain = demo_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    for text, opens in ((plain, False), (plain + "<think>\n", True), (plain + "<think>\nhm</think>\n\n", False)):
        ids = demo_tokenizer.encode(text, add_special_tokens=False)
        assert prompt_ids_open_thinking(demo_tokenizer, ids) is opens, text[-30:]
