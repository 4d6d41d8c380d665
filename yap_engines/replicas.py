"""`ReplicatedEngine`: one `InferenceEngine` over several replicas, where a dead replica costs no turn.

The replicas are engines themselves: a `RemoteEngine` per upstream URL (`OPENAI_BASE_URL` with
several URLs, or one router URL), or in-process engines. The wrapper adds, in one place:

- **Sticky sessions.** `SessionBalancer` keeps each session id on one replica (rendezvous hashing
  with bounded load), so its prefix cache keeps hitting; a request without a session goes to the
  least loaded replica.
- **Health.** A background check (`health_interval_s`) takes a replica whose `health()` fails out
  and puts it back when it passes again; a replica that fails a request is taken out at once.
- **Retry before the first token.** The request goes to another replica (or again to the only one:
  a router, which has taken the dead replica out by then).
- **Continuation after it.** The turn goes on on another replica from a raw token prompt: the
  request's prompt token ids plus the ids already streamed, with `max_tokens` reduced by as many.
  The consumer sees one stream: nothing repeated, nothing missing, one final delta whose usage
  counts the whole reply. This needs token ids on every delta (vLLM's `return_token_ids` for remote
  replicas; in-process engines always give them) and the prompt's ids on the request.
- **Counters** (`stats()`): attempts, retries, migrations, lost turns, replicas up; the server
  exports them on `/metrics`.

A turn that cannot be saved (every attempt failed, or no ids to continue from) raises the last
replica's error, which the server answers as `engine_error`; the session stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from .balance import SessionBalancer
from .errors import EngineDeadError, EngineError, GenerationError, UnsupportedFeature
from .protocol import InferenceEngine, PrefillResult, SupportsPrefill
from .types import ChatRequest, Delta, EngineHealth, Usage


def can_retry(exc: BaseException) -> bool:
    """A replica's failure another replica may not share: a dead engine, a broken or silent connection,
    a 5xx/429 answer. A refused request (4xx, invalid, unsupported) would fail the same everywhere."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status >= 500 or status == 429
    return isinstance(exc, EngineDeadError | GenerationError)


@dataclasses.dataclass
class ReplicaStats:
    """What `/metrics` shows about the replicas (counters since start)."""

    attempts: int = 0  # requests sent to a replica (first tries, retries and continuations)
    retries: int = 0  # attempts repeated on another replica before any token was streamed
    migrations: int = 0  # turns continued on another replica after tokens were streamed
    lost: int = 0  # turns that could not be saved
    marked_down: int = 0  # times a replica was taken out


class ReplicatedEngine:
    """An `InferenceEngine` over named replicas (see the module docstring). Owns and closes them."""

    name = "replicated"

    def __init__(
        self,
        replicas: Mapping[str, InferenceEngine],
        *,
        health_interval_s: float = 2.0,
        max_attempts: int = 3,
        load_factor: float = 1.25,
        retry_backoff_s: float = 0.2,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.replicas = dict(replicas)
        self.balancer = SessionBalancer(list(self.replicas), load_factor=load_factor)
        self.health_interval_s = health_interval_s
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.counters = ReplicaStats()
        self._first = next(iter(self.replicas.values()))
        self.name = self._first.name  # the engine it is (e.g. "openai"), replicated
        self._running: dict[str, tuple[InferenceEngine, str]] = {}  # request id -> (replica, its request id)
        self._health_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def first(self) -> InferenceEngine:
        """The first replica (all serve the same model): what callers read about the model comes from it."""
        return self._first

    # -- what callers read: the first replica's (all replicas serve the same model) ---------------
    @property
    def model_id(self) -> str | None:
        return self._first.model_id

    @property
    def tokenizer(self) -> Any:
        return self._first.tokenizer

    @property
    def max_model_len(self) -> int | None:
        return self._first.max_model_len

    def num_unfinished_requests(self) -> int:
        return len(self._running)

    def stats(self) -> dict[str, Any]:
        """Counters, replicas up, and the sessions each replica holds."""
        return {
            **dataclasses.asdict(self.counters),
            "up": {name: name not in self.balancer.down for name in self.replicas},
            "sessions": self.balancer.loads(),
        }

    # -- generation -------------------------------------------------------------------------------
    async def generate(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        if self._closed:
            raise EngineDeadError("the replicated engine is closed")
        self._start_health_checks()
        streamed: list[int] = []
        blind = False  # text went out without its token ids: a continuation could not be exact
        avoid: set[str] = set()
        attempt = 0
        while True:
            attempt += 1
            name = self.balancer.pick(request.session_id, avoid=avoid)
            replica = self.replicas[name]
            sub = request if attempt == 1 else self._resumed(request, streamed, attempt)
            self.counters.attempts += 1
            self._running[request.request_id] = (replica, sub.request_id)
            try:
                async with contextlib.aclosing(replica.generate(sub)) as stream:
                    async for delta in stream:
                        streamed.extend(delta.token_ids)
                        blind = blind or bool(delta.text and not delta.token_ids)
                        if delta.finished and attempt > 1 and delta.usage is not None:
                            delta = dataclasses.replace(delta, usage=_whole_usage(request, streamed, delta.usage))
                        yield delta
                return
            except EngineError as exc:
                if not can_retry(exc) or attempt >= self.max_attempts or (streamed and blind):
                    self.counters.lost += 1
                    raise
                if streamed and not request.prompt_token_ids:
                    self.counters.lost += 1
                    raise GenerationError(f"{exc} (the turn cannot continue: the request has no prompt ids)") from exc
                self._mark_down(name)
                avoid.add(name)
                if streamed:
                    self.counters.migrations += 1
                else:
                    self.counters.retries += 1
                if streamed and len(streamed) >= request.sampling.max_tokens:
                    yield Delta("", (), "length", _whole_usage(request, streamed, None))
                    return
                if avoid >= set(self.replicas):
                    # Only failed replicas are left (one URL: a router): give its health check time to
                    # take the dead replica out before trying again.
                    await asyncio.sleep(min(self.retry_backoff_s * 2 ** (attempt - 1), 2.0))
            finally:
                self._running.pop(request.request_id, None)

    async def prefill(self, request: ChatRequest) -> PrefillResult:
        """Warm `request`'s prompt on the replica its session is kept on (where its next turn will go).

        A warm is best effort: a failing replica is taken out and the error raised, with no second try.
        Cancelling the awaiting task cancels the replica's warm, which aborts it there."""
        if self._closed:
            raise EngineDeadError("the replicated engine is closed")
        name = self.balancer.pick(request.session_id)
        replica = self.replicas[name]
        if not isinstance(replica, SupportsPrefill):
            raise UnsupportedFeature("prefill", f"the {replica.name} replicas", "turn automatic warms off")
        self._running[request.request_id] = (replica, request.request_id)
        try:
            return await replica.prefill(request)
        except EngineError as exc:
            if can_retry(exc):
                self._mark_down(name)
            raise
        finally:
            self._running.pop(request.request_id, None)

    @staticmethod
    def _resumed(request: ChatRequest, streamed: list[int], attempt: int) -> ChatRequest:
        """The same request again, or, after tokens were streamed, its raw-token continuation."""
        rid = f"{request.request_id}-a{attempt}"
        if not streamed:
            return dataclasses.replace(request, request_id=rid)
        sampling = dataclasses.replace(request.sampling, max_tokens=request.sampling.max_tokens - len(streamed))
        return ChatRequest(
            rid,
            (*request.prompt_token_ids, *streamed),
            sampling,
            structured_output=request.structured_output,
            session_id=request.session_id,
        )

    async def abort(self, request_id: str) -> None:
        running = self._running.get(request_id)
        if running is not None:
            replica, sub_id = running
            await replica.abort(sub_id)

    # -- health -----------------------------------------------------------------------------------
    def _mark_down(self, name: str) -> None:
        if name not in self.balancer.down:
            self.counters.marked_down += 1
        self.balancer.mark_down(name)

    async def check_replicas(self) -> dict[str, EngineHealth]:
        """Ask every replica's `health()` once; take failing ones out and put passing ones back."""
        names = list(self.replicas)
        checks = await asyncio.gather(*(self._check(self.replicas[n]) for n in names))
        for name, check in zip(names, checks, strict=True):
            if check.ok:
                self.balancer.mark_up(name)
            else:
                self._mark_down(name)
        return dict(zip(names, checks, strict=True))

    async def _check(self, replica: InferenceEngine) -> EngineHealth:
        try:
            return await asyncio.wait_for(replica.health(), timeout=max(self.health_interval_s, 5.0))
        except Exception as exc:  # a health check that fails is an answer, not an error
            return EngineHealth(False, f"health check failed: {exc!r}")

    def _start_health_checks(self) -> None:
        if self._health_task is None and self.health_interval_s > 0 and len(self.replicas) > 1:
            self._health_task = asyncio.create_task(self._health_loop(), name="yap-replica-health")

    async def _health_loop(self) -> None:
        while True:
            await self.check_replicas()
            await asyncio.sleep(self.health_interval_s)

    async def health(self) -> EngineHealth:
        """Healthy while at least one replica is; the detail names each replica's state."""
        if self._closed:
            return EngineHealth(False, "replicated engine is closed")
        self._start_health_checks()
        checks = await self.check_replicas()
        detail = "; ".join(f"{name}: {'up' if c.ok else 'down'} ({c.detail})" for name, c in checks.items())
        return EngineHealth(any(c.ok for c in checks.values()), detail)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await asyncio.gather(*(r.aclose() for r in self.replicas.values()), return_exceptions=True)

    async def __aenter__(self) -> ReplicatedEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _whole_usage(request: ChatRequest, streamed: list[int], last: Usage | None) -> Usage:
    """Usage of the whole turn: the original prompt, every streamed token, the last attempt's cache hits."""
    cached = min(last.cached_tokens, len(request.prompt_token_ids)) if last is not None else 0
    prompt = len(request.prompt_token_ids) or (last.prompt_tokens if last is not None else 0)
    return Usage(prompt, len(streamed), cached)
