"""Prompt fitting with the demo model's real tokenizer and ChatML template."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yap_engines import ContextTooLongError
from yap_engines.chat import count_tokens, fit_prompt, render_ids, render_text, split_turns

WORDS = st.lists(st.sampled_from(["hi", "the weather", "screen", "okay?", "long sentence here", "é"]), max_size=12)
HISTORY = st.lists(st.tuples(st.sampled_from(["user", "assistant"]), WORDS.map(" ".join)), max_size=10).map(
    lambda items: [{"role": role, "content": text} for role, text in items] + [{"role": "user", "content": "now?"}]
)


def test_render_uses_the_chat_template(demo_tokenizer: Any) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = render_text(demo_tokenizer, messages)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert demo_tokenizer.decode(render_ids(demo_tokenizer, messages)) == text
    assert count_tokens(demo_tokenizer, "Be brief.") == len(
        demo_tokenizer.encode("Be brief.", add_special_tokens=False)
    )


def test_turns_start_at_user_messages() -> None:
    history = [
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert [len(turn) for turn in split_turns(history)] == [1, 2, 1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=HISTORY, persona_words=WORDS, budget=st.integers(1, 200))
def test_fit_keeps_the_persona_and_drops_only_whole_oldest_turns(
    demo_tokenizer: Any, history: list[dict[str, str]], persona_words: list[str], budget: int
) -> None:
    persona = [{"role": "system", "content": " ".join(persona_words) or "You help."}]
    turns = split_turns(history)
    try:
        fitted = fit_prompt(demo_tokenizer, persona, history, budget)
    except ContextTooLongError:
        newest_alone = render_ids(demo_tokenizer, [*persona, *turns[-1]])
        assert len(newest_alone) > budget
        return
    assert len(fitted.token_ids) <= budget
    assert fitted.token_ids == render_ids(demo_tokenizer, fitted.messages)
    assert fitted.messages[: len(persona)] == persona
    kept = [m for turn in turns[fitted.dropped_turns :] for m in turn]
    assert fitted.messages[len(persona) :] == kept
    if fitted.dropped_turns:  # minimal: keeping one more turn would not fit
        one_more = [*persona, *(m for turn in turns[fitted.dropped_turns - 1 :] for m in turn)]
        assert len(render_ids(demo_tokenizer, one_more)) > budget


def test_a_persona_that_cannot_fit_is_context_too_long(demo_tokenizer: Any) -> None:
    persona = [{"role": "system", "content": "word " * 100}]
    with pytest.raises(ContextTooLongError, match="persona"):
        fit_prompt(demo_tokenizer, persona, [{"role": "user", "content": "hi"}], budget=50)
