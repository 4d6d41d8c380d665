"""Text helpers the in-library engines share (private): fake tokens, the fake tokenizer, stop strings.

`FakeEngine` streams `split_pieces` as its tokens; `find_stop` and `held_back` are the stop-string rule
(what ends a reply, and what may not be streamed yet because it may begin a stop string), which the TRT
adapter applies to its own text too.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

_PIECE = re.compile(r"\s*\S+|\s+")


def piece_token_id(piece: str) -> int:
    """A stable fake token id for a text piece."""
    return zlib.crc32(piece.encode()) % 50_000


def split_pieces(text: str) -> list[str]:
    """Split text into fake tokens: each word with its leading whitespace."""
    return _PIECE.findall(text)


class FakeTokenizer:
    """A tiny tokenizer with a ChatML-style chat template, so prompts for fake engines are real token ids.

    Tokens are the pieces of `split_pieces`; ids are stable hashes, and `decode` maps back the ids
    this tokenizer has encoded. Enough for prompt budgeting, history trimming and prefix-cache
    simulation; use a real tokenizer where exact counts matter.
    """

    eos_token_id = 0

    def __init__(self) -> None:
        self._pieces: dict[int, str] = {}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = []
        for piece in split_pieces(text):
            token_id = piece_token_id(piece)
            self._pieces[token_id] = piece
            ids.append(token_id)
        return ids

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join(self._pieces.get(token_id, "") for token_id in token_ids)

    def apply_chat_template(
        self, messages: Sequence[Any], add_generation_prompt: bool = True, tokenize: bool = True, **_: Any
    ) -> Any:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        if add_generation_prompt:
            text += "<|im_start|>assistant\n"
        return self.encode(text) if tokenize else text


def find_stop(text: str, stop: Sequence[str], new_from: int) -> int | None:
    """Where the first stop string in `text` starts, looking only at matches that reach past `new_from` (the
    text before it was searched when it arrived)."""
    hits = [i for i in (text.find(s, max(0, new_from - len(s) + 1)) for s in stop) if i >= 0]
    return min(hits) if hits else None


def held_back(text: str, stop: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that may be the start of a stop string."""
    longest = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest
