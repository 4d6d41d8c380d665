"""The engine seam: what every inference backend (vLLM, TensorRT-LLM, remote, fake) provides."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .types import ChatRequest, Delta, EngineHealth

if TYPE_CHECKING:
    from .dtype import DtypeChoice


@runtime_checkable
class InferenceEngine(Protocol):
    """A streaming text generator behind one small contract.

    - `generate` is an async generator of *deltas* only; the last delta carries `finish_reason` and
      `Usage`. Consume it under `contextlib.aclosing` so that leaving early closes it at once.
    - Cancelling the consuming task, or closing the generator (`aclose()`), aborts the request in the
      backend before the error propagates; nothing keeps running.
    - `abort(request_id)` does the same from outside; the stream then ends with `finish_reason`
      "cancelled".
    - `health()` reports whether the engine can serve; `aclose()` releases it (idempotent).
    - `model_id`, `tokenizer` and `max_model_len` are what callers read about the model: plain
      attributes or properties, declared here so that nothing probes for them.
    """

    name: str

    @property
    def model_id(self) -> str | None:
        """The served model's id (what `/v1/models` lists); None when the backend has not said yet."""
        ...

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer (chat template, token counts); None when the engine has none."""
        ...

    @property
    def max_model_len(self) -> int | None:
        """The model's context length in tokens; None when unknown (no bound is applied)."""
        ...

    def generate(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        """Stream the reply to `request` as deltas."""
        ...

    async def abort(self, request_id: str) -> None:
        """Abort a running request by id; a no-op when it is not running."""
        ...

    async def health(self) -> EngineHealth:
        """Check that the engine is alive and able to serve."""
        ...

    async def aclose(self) -> None:
        """Shut the engine down and release its resources. Safe to call twice."""
        ...


# -- optional capabilities -----------------------------------------------------------------------
# An engine declares each one by providing its methods; callers test with `isinstance(engine, Cap)`
# (these protocols are runtime-checkable), never by probing attribute names.


@dataclass(frozen=True)
class PrefillResult:
    """What a warm did: `prompt_tokens` it was given, and `cached_tokens`: how many of them the engine's
    prefix cache now holds (whole cache blocks; see each adapter), so a later prompt that starts with
    them skips computing those."""

    prompt_tokens: int
    cached_tokens: int


@runtime_checkable
class SupportsPrefill(Protocol):
    """An engine that can warm a prompt: compute `request.prompt_token_ids` into its prefix cache and
    stream nothing. Cancelling the awaiting task aborts the work in the engine (nothing keeps running);
    `request.sampling` is ignored (the warm asks for at most one token and discards it)."""

    async def prefill(self, request: ChatRequest) -> PrefillResult:
        """Warm `request`'s prompt; the prefix-cache tokens it now holds."""
        ...


@runtime_checkable
class ReportsCacheBlock(Protocol):
    """An engine whose prefix cache keeps whole blocks of `cache_block_size` tokens (vLLM, TensorRT-LLM, the
    fake): a prompt's tokens past its last whole block are never cached, so a warm that adds no whole block
    adds nothing (the server skips it)."""

    @property
    def cache_block_size(self) -> int:
        """Tokens per prefix-cache block."""
        ...


@runtime_checkable
class SupportsPrefixCacheReset(Protocol):
    """An engine whose prefix cache can be dropped (`CACHE_RESET_INTERVAL_SECONDS`)."""

    async def reset_prefix_cache(self) -> bool:
        """Drop the prefix cache; False when the engine could not do it now."""
        ...


@runtime_checkable
class ReportsDtype(Protocol):
    """An engine that chose its weights dtype (`YAP_DTYPE`, `auto` by the processor) and says why."""

    @property
    def dtype_choice(self) -> DtypeChoice:
        """The dtype the weights run in and the reason (start-up log, `/status`)."""
        ...


OnDelta = Callable[[Delta], Awaitable[bool]]
"""Called with each delta in order; returning False stops the stream (the request is aborted)."""


async def consume(engine: InferenceEngine, request: ChatRequest, on_delta: OnDelta) -> None:
    """The one loop that reads an engine stream: every caller (the server's generation pipeline, each
    thinking pass) goes through it. Leaving early (`on_delta` says stop, an error, a cancellation)
    closes the stream, which aborts the request in the engine."""
    async with contextlib.aclosing(engine.generate(request)) as stream:
        async for delta in stream:
            if not await on_delta(delta):
                return
