"""In-library engines for tests, notebooks and server benchmarks: no model, no GPU.

`FakeEngine` streams deterministic text (a fixed text, a script of replies, or words drawn from a
seed) at a configurable rate. `FunctionEngine` streams whatever an async function yields. Both
behave like a real backend where it matters: deltas only, `max_tokens` -> "length", stop strings
-> "stop", cancellation and `abort()` free the request at once, usage with simulated prefix-cache
hits (whole blocks of a previously seen prompt), and an optional failure after N tokens.

Prefix cache, modelled: every prompt an engine has computed (a reply's, or a warm's through
`prefill`) is remembered, and a later prompt's `cached_tokens` is its longest common prefix with one
of them, cut down to whole blocks of `cache_block_size` (and never the last prompt token), as vLLM
reports it. `prefill` takes `prefill_delay_s` (abortable, counted as running) and then holds the
prompt's whole blocks.

Coalescing, as vLLM does it: the first token is a delta of its own; after it, a delta goes out every
`stream_interval` tokens (vLLM's `stream_interval`), and tokens that fell due while the consumer was
busy (a paced engine whose reader is slower than its rate) go out together in one delta, as vLLM's
output collector merges the outputs its reader has not taken yet. Unpaced (`tokens_per_s=0`), every
`stream_interval` tokens make a delta.

The text helpers live in private modules the adapters share: `_text.py` (the fake tokens and tokenizer,
the stop-string rule the TRT adapter applies too) and `_schema.py` (the structured-output example).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any

from ..chat import shared_prefix_length
from ..errors import EngineDeadError, GenerationError, InvalidRequestError, UnsupportedFeature
from ..protocol import PrefillResult
from ..types import ChatRequest, Delta, EngineHealth, FinishReason, StructuredOutput, Usage
from ._schema import example_for_schema
from ._text import FakeTokenizer, find_stop, held_back, piece_token_id, split_pieces

_WORDS = (
    "sure",
    "okay",
    "let",
    "me",
    "see",
    "the",
    "screen",
    "shows",
    "a",
    "window",
    "with",
    "some",
    "text",
    "I",
    "think",
    "that",
    "is",
    "right",
    "here",
    "you",
    "go",
    "nice",
    "question",
    "today",
    "weather",
    "sounds",
    "good",
    "maybe",
    "we",
    "can",
    "try",
    "again",
    "later",
    "thanks",
    "for",
    "asking",
)
_MAX_SEEDED_PIECES = 48  # a seeded reply is 12-40 words and a period


class _StreamingFake:
    """Shared streaming loop: rate, first-token delay, stop strings, limits, abort, usage."""

    __test__ = False
    name = "fake"

    def __init__(
        self,
        *,
        tokens_per_s: float = 0.0,
        first_token_delay_s: float = 0.0,
        fail_after: int | None = None,
        cache_block_size: int = 16,
        model_id: str = "fake",
        tokenizer: Any = None,
        max_model_len: int | None = None,
        stream_interval: int = 1,
        prefill_delay_s: float = 0.0,
        prefill_s_per_token: float = 0.0,
    ) -> None:
        if stream_interval < 1:
            raise ValueError(f"stream_interval must be at least 1, got {stream_interval}")
        self.stream_interval = stream_interval
        self.tokenizer = tokenizer if tokenizer is not None else FakeTokenizer()
        self.max_model_len = max_model_len
        self.tokens_per_s = tokens_per_s
        self.first_token_delay_s = first_token_delay_s
        self.fail_after = fail_after
        self.cache_block_size = cache_block_size
        self.model_id = model_id
        self._running: dict[str, _Run] = {}
        self._seen_prompts: deque[tuple[int, ...]] = deque(maxlen=64)
        self._dead_reason: str | None = None
        self.requests_started = 0
        self.prefill_delay_s = prefill_delay_s
        self.prefill_s_per_token = prefill_s_per_token
        self.prefills_started = 0
        self.prefills_completed = 0

    # -- subclass hook ---------------------------------------------------------------------------
    def _pieces(self, request: ChatRequest) -> AsyncIterator[str]:
        raise NotImplementedError

    # -- introspection for tests and the server --------------------------------------------------
    def num_unfinished_requests(self) -> int:
        """How many requests are still running in this engine."""
        return len(self._running)

    @property
    def running_request_ids(self) -> list[str]:
        return list(self._running)

    def kill(self, reason: str = "killed") -> None:
        """Simulate a dead backend: health fails and running/new requests raise `EngineDeadError`."""
        self._dead_reason = reason

    # -- InferenceEngine -------------------------------------------------------------------------
    async def generate(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        if self._dead_reason is not None:
            raise EngineDeadError(f"{self.name} engine is dead: {self._dead_reason}")
        rid = request.request_id
        if rid in self._running:
            raise InvalidRequestError(f"request_id {rid!r} is already running; use a fresh id per request")
        pieces = self._pieces(request)  # may refuse the request (unsupported feature): before it is running
        run = self._running[rid] = _Run()
        self.requests_started += 1
        usage_cached = self._cached_tokens(request.prompt_token_ids)
        compute_s = (len(request.prompt_token_ids) - usage_cached) * self.prefill_s_per_token
        sampling = request.sampling
        text, emitted, count, sent = "", 0, 0, 0
        held: list[int] = []  # token ids not yet sent in a delta
        finish: FinishReason = "stop"
        loop = asyncio.get_running_loop()
        try:
            await run.pause(self.first_token_delay_s + compute_s)
            # Pace by deadline (token n is due n/rate after the first), so the rate holds even when
            # the event loop's timers are coarser than one token interval.
            paced_from = loop.time()
            async for piece in pieces:
                if run.aborted:
                    finish = "cancelled"
                    break
                if self._dead_reason is not None:
                    raise EngineDeadError(f"{self.name} engine died mid-stream: {self._dead_reason}")
                if self.fail_after is not None and count >= self.fail_after:
                    if held:  # what fell due while the reader was busy goes out before the failure
                        yield Delta(text[emitted:], tuple(held))
                        emitted, held = len(text), []
                    raise GenerationError(f"{self.name} engine failed after {count} tokens (fail_after)")
                count += 1
                text += piece
                held.append(piece_token_id(piece))
                cut = find_stop(text, sampling.stop, len(text) - len(piece))
                if cut is not None:
                    text = text[:cut]
                    break
                if count >= sampling.max_tokens:
                    finish = "length"
                    break
                due = paced_from + count / self.tokens_per_s if self.tokens_per_s else 0.0
                # the first token at once; then every `stream_interval` tokens, and only once the next
                # token is not due yet (a late reader gets what fell due meanwhile in one delta)
                if sent == 0 or (len(held) >= self.stream_interval and (not due or due > loop.time())):
                    visible = len(text) - held_back(text, sampling.stop)
                    yield Delta(text[emitted:visible], tuple(held))
                    emitted, sent, held = visible, sent + 1, []
                await run.pause(due - loop.time() if due else 0.0)
            else:
                finish = "cancelled" if run.aborted else "stop"
            usage = Usage(len(request.prompt_token_ids), count, usage_cached)
            yield Delta(text[emitted:], tuple(held), finish, usage)
        finally:
            self._running.pop(rid, None)
            await pieces.aclose()  # type: ignore[attr-defined]

    async def prefill(self, request: ChatRequest) -> PrefillResult:
        """Warm the prompt: after `prefill_delay_s` (abortable) its whole blocks are cached. Cancelled or
        aborted, nothing stays running, and only the whole blocks computed so far (at `prefill_s_per_token`)
        stay cached."""
        if self._dead_reason is not None:
            raise EngineDeadError(f"{self.name} engine is dead: {self._dead_reason}")
        rid = request.request_id
        if rid in self._running:
            raise InvalidRequestError(f"request_id {rid!r} is already running; use a fresh id per request")
        run = self._running[rid] = _Run()
        self.prefills_started += 1
        prompt = tuple(request.prompt_token_ids)
        known = self._common_prefix(prompt)
        loop = asyncio.get_running_loop()
        began = loop.time()
        completed = False
        try:
            await run.pause(self.prefill_delay_s + (len(prompt) - known) * self.prefill_s_per_token)
            if run.aborted:
                return PrefillResult(len(prompt), 0)
            completed = True
            self._seen_prompts.append(prompt)
            self.prefills_completed += 1
            return PrefillResult(len(prompt), len(prompt) - len(prompt) % self.cache_block_size)
        finally:
            self._running.pop(rid, None)
            if not completed and self.prefill_s_per_token > 0:
                # Cut short: the tokens computed so far stay cached (whole blocks), as in vLLM.
                computed = int((loop.time() - began - self.prefill_delay_s) / self.prefill_s_per_token)
                done = known + max(0, computed)
                if done >= self.cache_block_size:
                    self._seen_prompts.append(prompt[: done - done % self.cache_block_size])

    async def abort(self, request_id: str) -> None:
        run = self._running.get(request_id)
        if run is not None:
            run.abort()

    async def health(self) -> EngineHealth:
        if self._dead_reason is not None:
            return EngineHealth(False, f"{self.name} engine is dead: {self._dead_reason}")
        return EngineHealth(True)

    async def aclose(self) -> None:
        for run in self._running.values():
            run.abort()
        if self._dead_reason is None:
            self._dead_reason = "closed"

    async def __aenter__(self) -> _StreamingFake:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- helpers ---------------------------------------------------------------------------------
    def _common_prefix(self, prompt: Sequence[int]) -> int:
        """The longest prefix `prompt` shares with a prompt this engine has computed.

        `shared_prefix_length` per remembered prompt (slices compared in C), skipping a prompt too short to
        beat the best so far."""
        ids = tuple(prompt)
        best = 0
        for seen in self._seen_prompts:
            if min(len(seen), len(ids)) > best:  # else it cannot beat the best so far
                best = max(best, shared_prefix_length(seen, ids))
        return best

    def _cached_tokens(self, prompt: Sequence[int]) -> int:
        best = self._common_prefix(prompt)
        self._seen_prompts.append(tuple(prompt))
        # Like a real prefix cache: whole blocks only, and the last prompt token is always computed.
        best = min(best, len(prompt) - 1)
        return best - best % self.cache_block_size


class _Run:
    """One running request: its abort flag, and the wake-up of the pause it may be in (no task per pause)."""

    __slots__ = ("_wake", "aborted")

    def __init__(self) -> None:
        self.aborted = False
        self._wake: asyncio.Future[None] | None = None

    def abort(self) -> None:
        self.aborted = True
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds` (0 or less: just yield to the loop); `abort()` ends the sleep at once."""
        if seconds <= 0 or self.aborted:
            await asyncio.sleep(0)  # a cancellation point, and fairness between streams
            return
        loop = asyncio.get_running_loop()
        self._wake = wake = loop.create_future()
        timer = loop.call_later(seconds, _wake_up, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None


def _wake_up(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)


class FakeEngine(_StreamingFake):
    """Deterministic fake chat engine.

    The reply is `text` if given, else the next entry of `script` (cycling), else 12-40 words drawn
    from a generator seeded by (`seed`, the request's sampling seed, the prompt). Structured outputs:
    `choice` picks an option, `json_schema` yields a minimal valid instance, `json_object` yields
    `{}`; `regex`/`grammar` raise `UnsupportedFeature`. `tokenizer` (default: `FakeTokenizer`) is
    what callers render prompts with; pass a real one to budget prompts exactly.
    """

    def __init__(
        self, *, text: str | None = None, script: Sequence[str] | None = None, seed: int = 0, **options: Any
    ) -> None:
        """`options` are the streaming knobs shared with `FunctionEngine`: `tokens_per_s`,
        `first_token_delay_s`, `fail_after`, `cache_block_size`, `model_id`, `tokenizer`, `max_model_len`,
        `stream_interval`, `prefill_delay_s`, `prefill_s_per_token` (the compute time of each prompt token
        the cache does not hold, before the first token and in a warm)."""
        super().__init__(**options)
        if script is not None and not script:
            raise ValueError("script must hold at least one reply")
        self.text = text
        self.script = list(script) if script is not None else None
        self._vocabulary: tuple[str | None, frozenset[int]] | None = None
        self.seed = seed

    @classmethod
    def from_settings(cls, settings: Any) -> FakeEngine:
        return cls(
            text=settings.fake_text,
            seed=settings.seed,
            tokens_per_s=settings.fake_tokens_per_s,
            first_token_delay_s=settings.fake_first_token_delay_s,
            model_id=settings.model or "fake",
            stream_interval=settings.stream_interval_tokens,
        )

    def reply_text(self, request: ChatRequest) -> str:
        """The full text this engine would produce for `request` (before limits and stop strings)."""
        rng = random.Random(f"{self.seed}:{request.sampling.seed}:{request.prompt_token_ids}")
        if request.structured_output is not None:
            return _structured_reply(request.structured_output, rng)
        if self.text is not None:
            return self.text
        if self.script is not None:
            return self.script[self.requests_started % len(self.script)]  # this request is the next one
        words = [rng.choice(_WORDS) for _ in range(rng.randint(12, 40))]
        return " ".join(words).capitalize() + "."

    def _pieces(self, request: ChatRequest) -> AsyncIterator[str]:
        return _iterate(self._remaining(request))

    def _reply_vocabulary(self) -> frozenset[int]:
        """The token ids a fixed-text or seeded reply can contain (seeded: "Word", " word", " word.")."""
        if self._vocabulary is None or self._vocabulary[0] != self.text:  # kept per text (tests may change it)
            if self.text is not None:
                pieces = split_pieces(self.text)
            else:
                forms = (lambda w: w.capitalize(), lambda w: " " + w, lambda w: " " + w + ".")
                pieces = [form(word) for word in _WORDS for form in forms]
            self._vocabulary = (self.text, frozenset(piece_token_id(piece) for piece in pieces))
        return self._vocabulary[1]

    def _remaining(self, request: ChatRequest) -> list[str]:
        """The reply's pieces, or what is left of them when `request` continues this engine's own reply.

        A prompt ending with the first k pieces of the reply this engine gives to the prompt before
        them is a turn resumed from the tokens it already streamed (on this replica or another one
        with the same seed): the reply goes on from piece k, as a model continues its own text. Fixed
        text and seeded words only (a script's next reply depends on the request count)."""
        pieces = split_pieces(self.reply_text(request))
        prompt = tuple(request.prompt_token_ids)
        if self.script is not None or request.structured_output is not None or len(prompt) < 2:
            return pieces
        # Only a tail of ids a reply can hold can be streamed tokens: a chat prompt (it ends with the
        # template's generation prompt) has none, and costs one set lookup.
        vocabulary = self._reply_vocabulary()
        tail = 0
        while tail < len(prompt) - 1 and prompt[-1 - tail] in vocabulary:
            tail += 1
        longest = len(split_pieces(self.text)) if self.text is not None else _MAX_SEEDED_PIECES
        for k in range(min(longest, tail), 0, -1):
            earlier = replace(request, prompt_token_ids=prompt[:-k])
            before = pieces if self.text is not None else split_pieces(self.reply_text(earlier))
            if len(before) >= k and tuple(piece_token_id(p) for p in before[:k]) == prompt[-k:]:
                return before[k:]
        return pieces


async def _iterate(pieces: list[str]) -> AsyncIterator[str]:
    for piece in pieces:
        yield piece


def _structured_reply(spec: StructuredOutput, rng: random.Random) -> str:
    if spec.kind == "choice":
        return str(rng.choice(spec.spec))
    if spec.kind == "json_object":
        return "{}"
    if spec.kind == "json_schema":
        return json.dumps(example_for_schema(spec.spec))
    raise UnsupportedFeature(f"{spec.kind} structured output", "fake", "use the vllm engine for regex and grammar")


class FunctionEngine(_StreamingFake):
    """An engine whose reply pieces come from `fn(request)`, an async generator of strings.

    Each yielded string counts as one token. Limits, stop strings, abort and usage work as in
    `FakeEngine`, so bespoke scenarios (slow starts, odd chunking, mid-stream errors) are easy.
    """

    name = "function"

    def __init__(self, fn: Callable[[ChatRequest], AsyncIterator[str]], **options: Any) -> None:
        super().__init__(**options)
        self.fn = fn

    def _pieces(self, request: ChatRequest) -> AsyncIterator[str]:
        return self.fn(request)
