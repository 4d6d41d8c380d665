"""Strict JSON from guided decoding, while it streams.

A JSON grammar lets raw control characters (U+0000-U+001F) through inside strings, which a strict
parser (`json.loads`, `JSON.parse`) rejects. `StrictJsonStream` escapes them chunk by chunk, tracking
only whether the text is inside a string and after a backslash, so the streamed answer parses
strictly to the same value a lenient parse of the raw text gives. Text outside strings passes
unchanged (the grammar allows only JSON whitespace there).
"""

from __future__ import annotations

import json


class StrictJsonStream:
    """`feed(chunk)` returns the chunk with raw control characters inside JSON strings escaped."""

    def __init__(self) -> None:
        self._in_string = False
        self._escaped = False

    def feed(self, chunk: str) -> str:
        out: list[str] = []
        for char in chunk:
            if not self._in_string:
                self._in_string = char == '"'
            elif self._escaped:
                self._escaped = False
            elif char == "\\":
                self._escaped = True
            elif char == '"':
                self._in_string = False
            elif char < " ":
                char = json.dumps(char)[1:-1]  # "\n" -> "\\n", "\x08" -> "\\b", "\x01" -> "\\u0001"
            out.append(char)
        return "".join(out)

    def finish(self) -> str:
        """Nothing is held back: every chunk is escaped as it comes."""
        return ""
