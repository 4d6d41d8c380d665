"""`yap tool eval`'s arithmetic, checked exactly on a small fixed file with a deterministic classifier."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from yap_engines.tool_eval import (
    AFTER_A_LOOK,
    Row,
    distance_bucket,
    evaluate,
    follows_a_look,
    format_report,
    look_distances,
    multi_turn,
    parse_label,
    parse_rows,
    read_rows,
)

FOLLOWUPS = Path(__file__).parents[3] / "yap_engines" / "demo" / "data" / "tool_heldout_followups.tsv"

SMALL = """\
# a comment, then rows before any family line
# family: a
yes\tlook at this
no\ttell me a joke
yes\twhat is this thing

no\tlook, I'm tired
# family: b
1\tcheck my screen
0\thello there\tcheck my screen
take_screenshot\tand this one\tcheck my screen || hello there
no_tool\tbye\tcheck my screen || hello there || and this one
"""


async def keyword_decide(items: Sequence[tuple[tuple[str, ...], str]]) -> list[bool]:
    """Yes when the utterance says "look" or "screen": deterministic, so every figure is known."""
    return ["look" in text or "screen" in text for _, text in items]


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.tsv"
    path.write_text(SMALL)
    return path


async def test_the_figures_match_a_hand_count(small: Path) -> None:
    rows = read_rows(small)
    result = await evaluate(rows, keyword_decide)
    # a: look at this TP, joke TN, what is this thing FN, look I'm tired FP.
    # b: check my screen TP, hello TN, and this one FN, bye TN.
    assert result["confusion"] == {"tp": 2, "fp": 1, "tn": 3, "fn": 2}
    assert (result["n"], result["accuracy"], result["precision"], result["recall"], result["fpr"]) == (
        8,
        0.625,
        0.6667,
        0.5,
        0.25,
    )
    a, b = result["families"]["a"], result["families"]["b"]
    assert (a["accuracy"], a["precision"], a["recall"], a["fpr"], a["n"]) == (0.5, 0.5, 0.5, 0.5, 4)
    assert (b["accuracy"], b["precision"], b["recall"], b["fpr"], b["n"]) == (0.75, 1.0, 0.5, 0.0, 4)
    # after a look: the three turns that follow "check my screen" (hello TN, and this one FN, bye TN)
    after = result["slices"][AFTER_A_LOOK]
    assert after["confusion"] == {"tp": 0, "fp": 0, "tn": 2, "fn": 1}
    assert (after["n"], after["accuracy"], after["precision"], after["fpr"]) == (3, 0.6667, 0.0, 0.0)


CONVERSATION = """\
# family: c
yes\tlook here
no\tlook, a joke\tlook here
no\tthanks\tlook here || look, a joke
yes\tthe screen bit\tlook here || look, a joke || thanks
no\tunrelated
# family: d
no\tlook, no history anywhere in this family
"""


async def test_the_multi_turn_figures_match_a_hand_count(small: Path) -> None:
    rows = parse_rows(CONVERSATION.splitlines())
    result = await evaluate(rows, keyword_decide)
    # c: look here TP, joke FP (after a look, labelled no), thanks TN (after a look, labelled no),
    # screen bit TP (after a look), unrelated TN. d has no row with history: not a conversation.
    assert result["multi_turn"] == {
        "after_request_no_rate": 0.5,  # thanks kept no, the joke did not
        "after_request_no_n": 2,
        "after_a_look_precision": 0.5,  # joke FP, screen bit TP
        "step_accuracy": 0.8,  # 4 of family c's 5 steps
        "steps": 5,
        "look_recall": 1.0,  # look here, the screen bit
        "look_steps": 2,
        "by_distance": {  # look here and unrelated before any look; then the joke, thanks, the screen bit
            "none": {"n": 2, "accuracy": 1.0, "look_steps": 1, "recall": 1.0, "no_steps": 1, "no_rate": 1.0},
            "1": {"n": 1, "accuracy": 0.0, "look_steps": 0, "recall": 0.0, "no_steps": 1, "no_rate": 0.0},
            "2": {"n": 1, "accuracy": 1.0, "look_steps": 0, "recall": 0.0, "no_steps": 1, "no_rate": 1.0},
            "3": {"n": 1, "accuracy": 1.0, "look_steps": 1, "recall": 1.0, "no_steps": 0, "no_rate": 0.0},
        },
    }
    # the small file: after the look, hello and bye both stay no; family b is the only conversation
    small_rows = read_rows(small)
    figures = multi_turn(small_rows, await keyword_decide([(r.history, r.utterance) for r in small_rows]))
    assert figures == {
        "after_request_no_rate": 1.0,
        "after_request_no_n": 2,
        "after_a_look_precision": 0.0,
        "step_accuracy": 0.75,
        "steps": 4,
        "look_recall": 0.5,  # "and this one" (a look two steps after the first) is missed
        "look_steps": 2,
        "by_distance": {  # bye follows "and this one", itself a look: distance 1
            "none": {"n": 1, "accuracy": 1.0, "look_steps": 1, "recall": 1.0, "no_steps": 0, "no_rate": 0.0},
            "1": {"n": 2, "accuracy": 1.0, "look_steps": 0, "recall": 0.0, "no_steps": 2, "no_rate": 1.0},
            "2": {"n": 1, "accuracy": 0.0, "look_steps": 1, "recall": 0.0, "no_steps": 0, "no_rate": 0.0},
        },
    }
    assert "after-request no-rate 0.500 (n=2)" in format_report(result)


def test_rows_carry_family_label_and_history_oldest_first(small: Path) -> None:
    rows = read_rows(small)
    assert [r.family for r in rows] == ["a"] * 4 + ["b"] * 4
    assert rows[-1].history == ("check my screen", "hello there", "and this one")
    assert [r.label for r in rows] == [1, 0, 1, 0, 1, 0, 1, 0]
    assert follows_a_look(rows) == [False] * 5 + [True] * 3
    assert look_distances(rows) == [None] * 5 + [1, 2, 1]
    assert [distance_bucket(d) for d in (None, 1, 3, 4, 9)] == ["none", "1", "3", "4+", "4+"]
    assert parse_rows(["yes\tno family line\r\n"])[0].family == "all"


COMPACT = """\
# family: before-the-format-line
yes\tlook here\tand earlier || turns
# format: conversations
# family: shop
no\thi there
yes\tis this a good price?

no\toh nice
# family: game
yes\twhat level is this?
no\tthanks
"""


def test_the_compact_conversation_form_takes_each_steps_history_from_its_block() -> None:
    rows = parse_rows(COMPACT.splitlines())
    assert rows[0] == Row("before-the-format-line", 1, "look here", ("and earlier", "turns"))
    assert rows[1:] == [
        Row("shop", 0, "hi there"),
        Row("shop", 1, "is this a good price?", ("hi there",)),
        Row("shop", 0, "oh nice", ("hi there", "is this a good price?")),  # a blank line does not end a block
        Row("game", 1, "what level is this?"),  # a new family starts a new conversation
        Row("game", 0, "thanks", ("what level is this?",)),
    ]
    # the same steps written out in full parse to the same rows
    full = [f"# family: {r.family}\n{r.label}\t{r.utterance}\t{' || '.join(r.history)}" for r in rows[1:]]
    assert parse_rows("\n".join(full).splitlines()) == rows[1:]
    assert look_distances(rows[1:]) == [None, None, 1, None, 1]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "# format: conversations\nyes\ta\tb || c\n",
            r"data:2: expected label<TAB>utterance \(format: conversations\)",
        ),
        ("# format: dialogue\n", r"data:1: unknown format 'dialogue'"),
    ],
)
def test_the_compact_form_refuses_a_history_column_and_unknown_formats(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_rows(text.splitlines(), source="data")


@pytest.mark.parametrize(("text", "label"), [("YES", 1), ("1", 1), ("take_screenshot", 1), ("No", 0), ("no_tool", 0)])
def test_labels(text: str, label: int) -> None:
    assert parse_label(text) == label


@pytest.mark.parametrize("line", ["maybe\tsomething", "yes", "yes\t", "yes\ta\tb\tc"])
def test_bad_lines_name_their_line_number(line: str) -> None:
    with pytest.raises(ValueError, match=r"data:2:"):
        parse_rows(["no\tfine", line], source="data")


async def test_the_table_shows_every_family_and_the_confusion(small: Path) -> None:
    text = format_report(await evaluate(read_rows(small), keyword_decide))
    assert "labelled yes" in text and "labelled no" in text
    for name in ("a", "b", AFTER_A_LOOK, "overall"):
        assert any(line.startswith(name + " ") for line in text.splitlines()), name


def test_the_shipped_held_out_file_parses_into_families() -> None:
    rows = read_rows()
    families = {r.family for r in rows}
    assert len(rows) >= 200 and len(families) >= 10
    assert {0, 1} <= {r.label for r in rows}
    assert sum(follows_a_look(rows)) >= 30  # the multi-turn conversations


def test_the_shipped_follow_up_file_is_conversations_after_a_look() -> None:
    rows = read_rows(FOLLOWUPS)
    after = follows_a_look(rows)
    assert len(rows) >= 60 and len({r.family for r in rows}) >= 5
    assert sum(1 for r, a in zip(rows, after, strict=True) if a and r.label == 0) >= 40  # drift after a look
    assert sum(1 for r, a in zip(rows, after, strict=True) if a and r.label == 1) >= 10  # still looking


def test_the_cli_refuses_a_malformed_file_before_loading_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("perhaps\tlook at this\n")
    out = subprocess.run(
        [sys.executable, "-m", "yap_cli", "tool", "eval", "--data", str(bad), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "bad.tsv:1" in out.stderr
