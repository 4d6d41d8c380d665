"""`TurnResult`, the one record of a client turn: what `record` takes from each frame, and `live`'s row of it."""

from __future__ import annotations

from typing import Any

from yap_cli.client.core import TurnResult
from yap_cli.client.live import _row


def frame(kind: str, **payload: Any) -> dict[str, Any]:
    return {"type": kind, "request_id": "r", "payload": payload}


def test_record_times_each_milestone_once_and_keeps_the_text() -> None:
    turn = TurnResult("r", "what is on my screen?")
    turn.record(frame("toolcall", status="yes", raw=[{"name": "take_screenshot"}]))
    turn.record(frame("token", text="It is"))
    assert (turn.chunks, turn.first3_ms, turn.sentence_ms) == (1, None, None)
    first = (turn.toolcall_ms, turn.ttfb_ms)
    turn.record(frame("token", text=" a cat."))
    turn.record(frame("toolcall", status="yes", raw=[{"name": "take_screenshot"}]))
    assert (turn.toolcall_ms, turn.ttfb_ms) == first  # the first of each counts
    assert turn.first3_ms is not None and turn.sentence_ms is not None
    assert (turn.text, turn.chunks, turn.outcome) == ("It is a cat.", 2, "")
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "cached_tokens": 8}
    turn.record(frame("done", finish_reason="stop", usage=usage))
    assert (turn.outcome, turn.completion_tokens, turn.terminal["finish_reason"]) == ("done", 4, "stop")
    assert (turn.prompt_tokens, turn.cached_tokens) == (9, 8)
    assert 0 <= turn.toolcall_ms <= turn.ttfb_ms <= turn.first3_ms <= turn.sentence_ms <= turn.total_ms  # type: ignore[operator]


def test_a_turn_without_usage_has_no_token_counts_and_live_reports_it() -> None:
    turn = TurnResult("r", "hello")
    turn.record(frame("token", text="Hi"))
    turn.spoken_text = "Hi"
    turn.record(frame("cancelled", reason="client"))
    row = _row(turn)
    assert row == {
        "utterance": "hello",
        "outcome": "cancelled",
        "ttfb_ms": round(turn.ttfb_ms, 1),  # type: ignore[arg-type]
        "text": "Hi",
        "completion_tokens": None,
        "prompt_tokens": None,
        "cached_tokens": None,
        "spoken_text": "Hi",
    }
    assert "spoken_text" not in _row(TurnResult("s", "quiet"))
