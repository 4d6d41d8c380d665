"""`encode_json`, the one encoder of frames and SSE events: compact, non-ASCII kept, and whatever the fast
encoder refuses still encodes as the standard library would."""

from __future__ import annotations

import json

from yap_server.frames import encode_json


def test_frames_are_compact_json_with_text_kept_as_is() -> None:
    frame = {"type": "token", "session_id": "s", "request_id": "r", "payload": {"text": 'héllo ✓ "q"\n', "n": 1.5}}
    text = encode_json(frame)
    assert text == json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
    assert json.loads(text) == frame


def test_what_the_fast_encoder_refuses_encodes_as_the_standard_library_does() -> None:
    for odd in ({"text": "\ud800"}, {1: "non-string key"}, {"big": 2**70}):
        assert encode_json(odd) == json.dumps(odd, ensure_ascii=False, separators=(",", ":"))


def test_unicode_line_breaks_are_escaped_so_line_readers_keep_one_event_per_line() -> None:
    frame = {"payload": {"text": "a\u2028b\u2029c\x85d é"}}
    text = encode_json(frame)
    assert "\\u2028" in text and "\\u2029" in text and "\\u0085" in text and "é" in text
    assert json.loads(text) == frame
    assert len(f"data: {text}\n\n".splitlines()) == 2  # the event line, then the blank line
