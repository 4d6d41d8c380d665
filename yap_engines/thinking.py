"""Split `<think>…</think>` reasoning from the answer, in one shot or incrementally while streaming.

Rules (shared by both forms):
- Text inside `<think>…</think>` is reasoning; the tags themselves are dropped.
- A missing opening tag (a chat template that prefilled `<think>` in the prompt): the text before
  the `</think>` is reasoning.
- An opening tag that is never closed (the model was cut off while thinking): all of it is reasoning.

`split_thinking(text)` applies them to a whole reply, taking the text before the *last* `</think>`
as reasoning. `ThinkSplitter` applies them chunk by chunk, across arbitrary chunk boundaries (a tag
may be split over several chunks); for a reply with at most one `</think>` its output concatenates
to exactly what `split_thinking` returns, however the reply was chunked. After the first
`</think>` it streams the answer eagerly, so a later stray `</think>` stays in the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


@dataclass(frozen=True)
class ThinkSplit:
    """Reasoning and answer text (a whole reply, or the newly decided part of a stream)."""

    reasoning: str = ""
    content: str = ""

    def __add__(self, other: ThinkSplit) -> ThinkSplit:
        return ThinkSplit(self.reasoning + other.reasoning, self.content + other.content)


def split_thinking(text: str) -> ThinkSplit:
    """Split a whole reply into reasoning and answer."""
    close = text.rfind(CLOSE_TAG)
    if close >= 0:
        reasoning, content = text[:close], text[close + len(CLOSE_TAG) :]
        stripped = reasoning.lstrip()
        if stripped.startswith(OPEN_TAG):
            reasoning = stripped[len(OPEN_TAG) :]
        return ThinkSplit(reasoning, content)
    stripped = text.lstrip()
    if stripped.startswith(OPEN_TAG):
        return ThinkSplit(stripped[len(OPEN_TAG) :], "")
    return ThinkSplit("", text)


def prompt_opens_thinking(prompt_text: str) -> bool:
    """True when a rendered prompt ends inside an open think block (the template prefilled `<think>`)."""
    return prompt_text.rstrip().endswith(OPEN_TAG)


def prompt_ids_open_thinking(tokenizer: Any, prompt_token_ids: Sequence[int]) -> bool:
    """`prompt_opens_thinking` for token ids: decodes only the prompt's last few tokens (the tag's tail)."""
    return prompt_opens_thinking(str(tokenizer.decode(list(prompt_token_ids[-8:]))))


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkSplitter:
    """Incremental splitter: `feed(chunk)` returns what can be decided so far; `finish()` the rest.

    `starts_in_reasoning`:
    - True: the prompt already opened a think block; output is reasoning until `</think>`.
    - False: output is the answer, unless it starts with `<think>`; text is never held back
      beyond a possibly split tag.
    - None (default, exact): when the output does not start with `<think>`, it is held back until a
      `</think>` shows it was reasoning or the stream ends (then it is the answer).
    """

    def __init__(self, *, starts_in_reasoning: bool | None = None) -> None:
        self._mode = "undecided" if starts_in_reasoning is None else ("reasoning" if starts_in_reasoning else "start")
        self._opened = False
        self._buffer = ""

    @property
    def in_reasoning(self) -> bool:
        return self._mode == "reasoning"

    def feed(self, chunk: str) -> ThinkSplit:
        self._buffer += chunk
        out = ThinkSplit()
        while True:
            step = self._step()
            if step is None:
                return out
            out = out + step

    def _step(self) -> ThinkSplit | None:
        """Consume what the buffer decides in the current mode; None when more input is needed."""
        buf, mode = self._buffer, self._mode
        if mode in ("start", "undecided"):
            stripped = buf.lstrip()
            if stripped.startswith(OPEN_TAG):
                self._buffer = stripped[len(OPEN_TAG) :]
                self._mode, self._opened = "reasoning", True
                return ThinkSplit()
            if OPEN_TAG.startswith(stripped):  # empty, whitespace, or a split opening tag
                return None
            if mode == "start":
                self._mode = "content"
                return ThinkSplit()
            close = buf.find(CLOSE_TAG)
            if close < 0:
                return None  # undecided: hold until `</think>` or the end
            self._buffer = buf[close + len(CLOSE_TAG) :]
            self._mode = "content"
            return ThinkSplit(buf[:close], "")
        if mode == "reasoning":
            close = buf.find(CLOSE_TAG)
            if close >= 0:
                self._buffer = buf[close + len(CLOSE_TAG) :]
                self._mode = "content"
                return ThinkSplit(buf[:close], "")
            keep = _partial_suffix(buf, CLOSE_TAG)
            if len(buf) == keep:
                return None
            self._buffer = buf[len(buf) - keep :]
            return ThinkSplit(buf[: len(buf) - keep], "")
        if not buf:
            return None
        self._buffer = ""
        return ThinkSplit("", buf)

    def finish(self) -> ThinkSplit:
        """Flush what is left at the end of the stream."""
        buf, mode = self._buffer, self._mode
        self._buffer = ""
        if mode == "reasoning":
            return ThinkSplit(buf, "")
        if mode in ("start", "undecided"):
            stripped = buf.lstrip()
            if stripped == OPEN_TAG:  # an opening tag and nothing else
                return ThinkSplit()
            return ThinkSplit("", buf)
        return ThinkSplit("", buf)
