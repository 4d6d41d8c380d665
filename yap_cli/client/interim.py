"""The interim transcript of `yap client live` and the `prefill` frames it becomes.

As the user types (or a speech-to-text service streams), the line so far is an interim transcript.
`Interim` decides when it goes out as a `prefill`:

- debounced: at once when a word ends (whitespace typed after a word), else after `pause_s` without a
  keystroke; a line that differs from the last one sent only in trailing whitespace is not sent again
  (the server warms the same prefix for both), nor is a blank line (the warm after `start` covers it);
- one in flight: while a `prefill` waits for its `ack` (or `error`), the newest text waits and goes out
  when the answer comes. A newer `prefill` would supersede (abort) the running warm on the server, and
  the one after it only has to compute what changed. A `prefill` unanswered for `stale_s` counts as
  answered: the server answers nothing for a warm that something else superseded (an automatic warm
  after a turn, a `message`).

Each `prefill` sent is a `Prefill` record, filled in by its answer; `take()` hands the records of the
coming turn over when its `message` goes out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

PAUSE_S = 0.25  # a prefill goes out after this long without a keystroke
STALE_S = 3.0  # an unanswered prefill stops holding the next one back after this long

SendPrefill = Callable[[str, str], Awaitable[None]]
"""Send a `prefill` frame: (request_id, user_utterance)."""


@dataclass
class Prefill:
    """One `prefill` sent, and what its `ack` said (None until one came; `error`: the code of an error)."""

    request_id: str
    utterance: str
    sent: float
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    error: str | None = None

    def row(self) -> dict[str, Any]:
        """The prefill as `yap client live`'s report lists it."""
        row: dict[str, Any] = {
            "utterance": self.utterance,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
        }
        if self.error is not None:
            row["error"] = self.error
        return row


class Interim:
    """The interim transcript and its prefills: debounced, one in flight (module docstring)."""

    def __init__(
        self,
        send: SendPrefill,
        *,
        pause_s: float = PAUSE_S,
        stale_s: float = STALE_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._send = send
        self.pause_s = pause_s
        self.stale_s = stale_s
        self._clock = clock
        self.text = ""  # the interim transcript now
        self._due: float | None = None  # when `text` should go out
        self._flight: Prefill | None = None  # the prefill waiting for its answer
        self._last = ""  # the text of the last prefill sent (trailing whitespace stripped)
        self._turn: list[Prefill] = []  # the prefills sent for the coming turn
        self._by_id: dict[str, Prefill] = {}

    def typed(self, text: str, *, word_ended: bool) -> None:
        """The line is now `text`; it goes out at once when a word just ended, else after a pause."""
        self.text = text
        now = self._clock()
        self._due = now if word_ended else now + self.pause_s

    def deadline(self) -> float | None:
        """When `tick` next has something to do (None: nothing until the next keystroke or answer)."""
        if self._due is None:
            return None
        if self._flight is not None:
            return max(self._due, self._flight.sent + self.stale_s)
        return self._due

    async def tick(self) -> Prefill | None:
        """Send the interim transcript when it is due and nothing is in flight; the prefill sent, if any."""
        now = self._clock()
        if self._due is None or now < self._due:
            return None
        if self._flight is not None and now < self._flight.sent + self.stale_s:
            return None  # sent when the answer comes
        self._due = None
        text = self.text
        if not text.strip() or text.rstrip() == self._last:
            return None
        prefill = Prefill(f"prefill-{uuid.uuid4().hex[:8]}", text, now)
        self._flight, self._last = prefill, text.rstrip()
        self._turn.append(prefill)
        self._by_id[prefill.request_id] = prefill
        await self._send(prefill.request_id, text)
        return prefill

    def answered(self, frame: dict[str, Any]) -> Prefill | None:
        """Take in a frame: the `Prefill` it answers (its `ack` or `error`), None when it answers none."""
        prefill = self._by_id.get(str(frame.get("request_id")))
        if prefill is None or frame.get("type") not in ("ack", "error"):
            return None
        payload = frame.get("payload") or {}
        if frame["type"] == "ack":
            prefill.prompt_tokens = payload.get("prompt_tokens")
            prefill.cached_tokens = payload.get("cached_tokens")
        else:
            prefill.error = str(payload.get("code"))
        if prefill is self._flight:
            self._flight = None
        return prefill

    def take(self) -> list[Prefill]:
        """The `message` goes out (it aborts a running warm): the prefills sent for it; the transcript
        starts over."""
        taken, self._turn = self._turn, []
        self.text, self._due, self._flight, self._last = "", None, None, ""
        return taken
