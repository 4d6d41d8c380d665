from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yap_server.ws.sanitize import StreamSanitizer, sanitize_text

# Pieces chosen so that chunk boundaries land inside every rule.
PIECES = st.sampled_from(
    [
        "*", "**", "laughs", "*laughs*", "(", ")", "[", "]", "sighs", "(USA)", ":", ")", ":)", ":-", "D", "x", "<3",
        "^_^", ";", "-", "\u2013", "—", "5", "10", "%", "°", "°C", "F", "C", ".", "..", "…", "\n", "\t", " ", "  ",
        "😀", "\u200d", "\ufe0f", "👍", "a", "B", "word", ",", "!", "/", "_",
    ]
)  # fmt: skip


def replies(max_size: int = 30) -> st.SearchStrategy[str]:
    return st.lists(PIECES, max_size=max_size).map("".join)


@st.composite
def chunked(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def stream(chunks: list[str], window: int = 64) -> str:
    sanitizer = StreamSanitizer(window=window)
    return "".join(sanitizer.feed(chunk) for chunk in chunks) + sanitizer.finish()


def one_shot(text: str, window: int) -> str:
    return stream([text], window)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*laughs* sure thing!", "Sure thing!"),
        ("It's 30°C and 50% humid 😀", "It's 30 degrees Celsius and 50 percent humid"),
        ("pages 5-10\nare done :)", "Pages 5 to 10 are done"),
        ("wait… what..", "Wait... what."),
        ("well—maybe", "Well, maybe"),
        ("**Bold** move", "Bold move"),
        ("meet at 10:30 (USA) ok", "Meet at 10:30 (USA) ok"),
        ("*smiles warmly* hi (sighs) there [giggles]", "Hi there"),
        ("(see above) and (2 items) or (a)", "And (2 items) or (a)"),
        ("(laughs at you loudly) no", "(Laughs at you loudly) no"),
        ("it is 5 °F or 3° out", "It is 5 degrees Fahrenheit or 3 degrees out"),
        ("up 50 % from 5\u201310 or 5 — 10", "Up 50 percent from 5 to 10 or 5 to 10"),
        ("word — word, well-known, a — ", "Word, word, well-known, a —"),
        ("so.... ok . . ...", "So... ok. . ..."),
        ("hi :-) ;) :( :P <3 xD ^_^ bye", "Hi bye"),
        ("xDoc and a:) b <3c", "XDoc and a:) b <3c"),
        ("visit http://x.io/:P now", "Visit http://x.io/:P now"),
        ("  \n\tspaced\t\tout \n", "Spaced out"),
        ("hello , world !", "Hello, world!"),
        ("great *laughs*.", "Great."),
        ("👨\u200d👩\u200d👧 family ❤️ 👍🏽 time", "Family time"),
        ("2 * 3 and _x_", "2 3 and _x_"),
        ('"quoted" start', '"Quoted" start'),
        ("30°C today", "30 degrees Celsius today"),
        ("", ""),
        ("*" + "a" * 41 + "*", "A" + "a" * 40),
        ("*" + "a" * 40 + "* end", "End"),
        ("*this opener is never closed", "This opener is never closed"),
    ],
)
def test_literal_outputs(text: str, expected: str) -> None:
    assert sanitize_text(text) == expected


@given(st.data(), replies(), st.sampled_from([16, 24, 64]))
@settings(max_examples=400)
def test_any_chunking_gives_the_one_shot_output(data: st.DataObject, text: str, window: int) -> None:
    assert stream(data.draw(chunked(text)), window) == one_shot(text, window)


@given(replies())
@settings(max_examples=300)
def test_one_character_at_a_time_gives_the_one_shot_output(text: str) -> None:
    assert stream(list(text)) == sanitize_text(text)


@given(replies())
def test_output_is_tidy(text: str) -> None:
    out = sanitize_text(text)
    assert out == out.strip()
    assert "\n" not in out and "\t" not in out and "  " not in out
    assert not re.search("[😀👍\ufe0f…*]", out)
    assert not re.search(r"\w [,.!?;:]", out)


@given(st.data(), replies(max_size=60))
def test_held_tail_stays_within_the_window(data: st.DataObject, text: str) -> None:
    sanitizer = StreamSanitizer(window=16)
    for chunk in data.draw(chunked(text)):
        sanitizer.feed(chunk)
        assert len(sanitizer.pending) < 16


def test_stable_prefix_is_emitted_early() -> None:
    sanitizer = StreamSanitizer()
    assert sanitizer.feed("It is 5") == "It is 5"
    assert sanitizer.feed("0") == "0"  # digits are final; "%" looks behind at them
    assert sanitizer.feed("% *la") == " percent"  # the space waits for what follows
    assert sanitizer.feed("ughs* ok :") == " ok"  # ":" may open an emoticon
    assert sanitizer.feed(")") == ""  # ":)" is removed only if no word character follows
    assert sanitizer.feed(" fine.") == " fine"  # "." may become "..." or "."
    assert sanitizer.pending == "."
    assert sanitizer.finish() == "."


def test_finish_resets_for_the_next_reply() -> None:
    sanitizer = StreamSanitizer()
    assert sanitizer.feed("first reply :") + sanitizer.finish() == "First reply:"
    assert sanitizer.feed("second") + sanitizer.finish() == "Second"


def test_window_below_minimum_is_rejected() -> None:
    with pytest.raises(ValueError):
        StreamSanitizer(window=8)


def test_long_reply_keeps_buffer_bounded() -> None:
    unit = "*laughs* It's 30°C, 50% humid 😀 and pages 5-10—wait… ok.. (sighs) :) (USA) **bold**\n"
    text = (unit * (200_000 // len(unit) + 1))[:200_000]
    sanitizer = StreamSanitizer(window=64)
    out: list[str] = []
    largest = 0
    for i in range(0, len(text), 5):
        out.append(sanitizer.feed(text[i : i + 5]))
        largest = max(largest, len(sanitizer.pending))
        assert len(sanitizer.pending) < 64
    out.append(sanitizer.finish())
    assert largest > 0
    assert "".join(out) == sanitize_text(text)
    assert "".join(out).count("degrees Celsius") == text.count("°C")
