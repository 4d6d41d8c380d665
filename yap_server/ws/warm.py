"""Warms: compute the prompt the next `message` will send into the engine's prefix cache while the user speaks.

A warm renders persona, history and the stable part of the interim transcript as token ids that are a
*strict token prefix* of what the final message will render, so the engine's cache hits are exact:

- the last, still-moving word of the interim transcript is dropped (`stable_text`): the speech-to-text
  service may still revise it ("Boston" -> "Austin");
- the prefix is the longest common prefix of the chat template rendered with that stable text followed
  by several different continuations (`yap_engines.chat.stable_prefix`). So it stops before anything
  the final text could change: a token that a following letter, digit or mark could merge with, the
  end-of-turn tokens and the generation prompt. It holds for any chat template and tokenizer, not only ChatML.

A warm is the connection's second kind of work (key `WARM`): one per session at a time; a newer one
supersedes (cancels, so aborts in the engine) an older one; a `message`, `start`, `end` or disconnect
aborts it too, since in vLLM the blocks it has computed stay cached and finishing it would compute the
same blocks twice beside the turn. It streams nothing, never enters history and is no turn. A warm the
client asked for (`prefill`) answers `ack` with `prompt_tokens` and `cached_tokens` when it finishes;
automatic warms (after `start`, after each turn) answer nothing.

A warm reaches the engine only when it adds a whole cache block (`CacheCover`): the engine caches whole
blocks only (128 tokens on vLLM's CPU build), so an interim transcript one word longer than the last one
usually adds none, yet it would still cost a scheduled request in the batch the other sessions' replies
stream in (and vLLM recomputes the last block of a prompt it holds entirely). Such a warm is skipped: a
`prefill` is answered at once with what is cached, and counted as a `skipped` warm. When the running warm
already computes every whole block of the newer one, it goes on and answers for the newer `prefill`
instead of being aborted and started again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from yap_engines import ChatRequest, EngineError
from yap_engines.chat import fit_prompt, render_ids, shared_prefix_length, stable_prefix
from yap_engines.protocol import SupportsPrefill

from ..streaming import failure_for
from .wire import ack_frame, error_frame

if TYPE_CHECKING:
    from ..telemetry import Telemetry
    from .session import Session

log = logging.getLogger("yap.ws.warm")

WARM = "warm"  # the connection's work key of the one warm a session runs

_LAST_WORD = re.compile(r"\s*\S*\s*$")

Send = Callable[[dict[str, Any]], Awaitable[None]]


def stable_text(utterance: str) -> str:
    """The interim transcript without its last (still-moving) word; leading whitespace dropped."""
    return _LAST_WORD.sub("", utterance.lstrip(), count=1)


def warm_prompt(
    session: Session,
    tokenizer: Any,
    prompt_budget: int,
    history_budget: int,
    trim_ratio: float,
    *,
    partial: str = "",
    role: str = "user",
) -> tuple[list[dict[str, str]], list[int]]:
    """The messages and token ids to warm for the next turn: persona, history trimmed as the turn will trim
    it, and the start of a `role` message (`partial`: the stable part of the interim transcript). Changes
    nothing in the session. May raise `ContextTooLongError`."""
    persona = session.persona.messages()
    history = session.history
    coming = len(render_ids(tokenizer, [{"role": role, "content": partial}], add_generation_prompt=False))
    kept = history.messages_after(history.trim_count(history_budget, trim_ratio, coming))
    fitted = fit_prompt(tokenizer, persona, [*kept, {"role": role, "content": partial}], prompt_budget)
    messages = [dict(m) for m in fitted.messages[:-1]]
    ids = stable_prefix(tokenizer, messages, role, partial)
    return [*messages, {"role": role, "content": partial}], ids


@dataclass
class CacheCover:
    """What a connection knows the engine's prefix cache holds for its session: the whole blocks of the
    last prompt it had computed (a completed warm, or a turn's prompt once its first token came).

    `block` is the engine's `cache_block_size` (1 for an engine that does not say: then only a warm its
    cover holds entirely is skipped). Best effort: the engine may have evicted those blocks since, and the
    turn then computes them as it would without warms."""

    block: int
    ids: tuple[int, ...] = ()

    def whole(self, ids: Sequence[int]) -> int:
        """How many of `ids` fill whole blocks (all an engine can cache of them)."""
        return len(ids) - len(ids) % self.block

    def held(self, ids: Sequence[int], cached: Sequence[int] | None = None) -> int:
        """How many leading tokens of `ids` (whole blocks) are held: by the cover, or by `cached`."""
        shared = shared_prefix_length(self.ids if cached is None else cached, ids)
        return shared - shared % self.block

    def adds(self, ids: Sequence[int], cached: Sequence[int] | None = None) -> bool:
        """Whether warming `ids` would cache a whole block beyond the cover (or `cached`)."""
        return self.whole(ids) > self.held(ids, cached)

    def record(self, ids: Sequence[int]) -> None:
        """`ids` were computed: their whole blocks are now cached."""
        self.ids = tuple(ids[: self.whole(ids)])


@dataclass
class Warm:
    """One warm as connection work. `ack` is True for a client's `prefill` (it answers `ack` when done)."""

    engine: SupportsPrefill
    session_id: str
    request_id: str
    token_ids: list[int]
    messages: list[dict[str, str]]
    send: Send
    telemetry: Telemetry
    ack: bool
    kind: str  # "prefill", "start" or "turn": what started it (telemetry)
    cover: CacheCover
    answers: list[int] | None = None  # the ids of a newer `prefill` this warm took over (its ack reports them)
    engine_request_id: str = field(default_factory=lambda: f"yap-warm-{uuid.uuid4().hex}")
    finished: bool = False
    stop_reason: str = "cancelled"  # what a cancellation counts as: set to "superseded" by a newer warm

    async def run(self) -> None:
        self.telemetry.warm_started(self.kind)
        request = ChatRequest(
            self.engine_request_id, self.token_ids, session_id=self.session_id, messages=self.messages
        )
        try:
            result = await self.engine.prefill(request)
        except asyncio.CancelledError:  # the engine request is aborted already
            self.finished = True
            self.telemetry.warm_ended(self.kind, self.stop_reason)
            raise
        except EngineError as exc:
            self.finished = True
            failure = failure_for(exc)
            self.telemetry.warm_ended(self.kind, "error")
            log.warning("warm failed: %s", failure.message)
            if self.ack:
                await self.send(error_frame(self.session_id, self.request_id, failure.code, failure.message))
            return
        self.finished = True
        self.cover.record(self.token_ids)
        self.telemetry.warm_ended(self.kind, "completed", result.prompt_tokens)
        prompt_tokens, cached_tokens = result.prompt_tokens, result.cached_tokens
        if self.answers is not None:
            prompt_tokens, cached_tokens = len(self.answers), min(cached_tokens, self.cover.held(self.answers))
        if self.ack:
            await self.send(
                ack_frame(
                    self.session_id,
                    self.request_id,
                    "prefill",
                    prompt_tokens=prompt_tokens,
                    cached_tokens=cached_tokens,
                )
            )

    def take_over(self, request_id: str | None, ids: list[int]) -> None:
        """Answer for a newer warm whose whole blocks this one computes anyway (`request_id`: the newer
        `prefill`'s; None for an automatic warm, which answers nothing and leaves the running ack alone)."""
        if request_id is not None:
            self.request_id, self.ack, self.answers = request_id, True, ids

    async def stopped(self, reason: str, notify: bool) -> bool:
        """Superseded or cancelled (counted by `run`; the engine request is aborted already). No frame: a warm
        has no terminal frame, and it is no turn (False: nothing to count as a cancelled turn)."""
        return False

    async def crashed(self, exc: Exception) -> None:
        self.telemetry.warm_ended(self.kind, "error")
        if self.ack and not self.finished:
            message = "the server failed on this prefill; it has been logged"
            await self.send(error_frame(self.session_id, self.request_id, "internal_error", message))
        self.finished = True
