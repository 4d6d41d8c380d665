"""The engine seam: what every inference backend (vLLM, TensorRT-LLM, remote, fake) provides."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from .types import ChatRequest, Delta, EngineHealth


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
    """

    name: str

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
