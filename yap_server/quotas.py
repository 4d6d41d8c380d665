"""Per-key quotas: requests and tokens per minute, tokens per day, concurrent sessions.

The counters live in the `limits` package's storage: this process's memory by default, or a Redis
shared by every worker and host (`YAP_LIMITS_REDIS_URL`), where each check-and-reserve is one atomic
script. One rule for tokens everywhere: a request reserves `prompt + max_tokens` when it is admitted and
gives back what it did not use when it ends, so a key never goes over its limit, even mid-stream.

- requests per minute: a moving window (the Retry-After is when its oldest request leaves the window);
- tokens per minute and per day: a fixed window that starts at the key's first request in it;
- sessions: a counter taken when a WebSocket is admitted and given back when it closes.

A refused request raises `QuotaExceededError` before the engine sees it; every route reports it in its
own shape (HTTP 429 with `Retry-After` and the rate-limit headers, a WebSocket `rate_limited` error with
`retry_after_s`, a Responses `rate_limit_exceeded` error event). When Redis cannot be reached,
`YAP_LIMITS_REDIS_FAILURE` decides: `open` admits, `closed` refuses (503 `limits_unavailable`); both are
logged and counted (`yap_limits_backend_failures_total`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from yap_engines.errors import EngineError

from .keys import ApiKey

if TYPE_CHECKING:
    from .settings import ServerSettings
    from .telemetry import Telemetry

log = logging.getLogger("yap.quotas")

MINUTE_S = 60  # the length of a "per minute" window (tests shorten it)
REDIS_TIMEOUT_S = 2.0  # a Redis that accepts no connection within this counts as down for that call
REDIS_REPLY_S = 5.0  # nor one that does not answer a command within this (generous: a loaded host is slow)
REDIS_CONNECTIONS = 32  # per process: a burst of requests queues for a connection instead of opening hundreds
REDIS_POOL_WAIT_S = 30.0  # waiting for a free connection is queueing under load, not an outage
FAILURE_LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class Refusal:
    """Why a key's request was refused, and when to retry. `kind`: requests, tokens, daily_tokens, sessions
    or limits_unavailable; `status`: the HTTP status (429, or 503 for an unreachable Redis in closed mode)."""

    kind: str
    key_id: str
    message: str
    retry_after_s: float
    limit: int = 0
    remaining: int = 0
    status: int = 429
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def retry_after_header(self) -> str:
        """`Retry-After` in whole seconds, rounded up (a client that sleeps that long gets in)."""
        return str(max(1, math.ceil(self.retry_after_s)))

    def extra(self) -> dict[str, Any]:
        """What a WebSocket error frame carries beside its code and message."""
        return {
            "retry_after_s": round(self.retry_after_s, 3),
            "limit": self.kind,
            "limit_value": self.limit,
            "remaining": self.remaining,
        }

    def http_headers(self) -> dict[str, str]:
        return {**self.headers, "Retry-After": self.retry_after_header}


class QuotaExceededError(EngineError):
    """A request refused by its key's quota before the engine saw it (`refusal` says which and until when).

    An `EngineError` so that it travels the generation pipeline's one failure path (`failure_for`): every
    route already turns that into its own error frame."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def redis_storage(url: str) -> tuple[Storage, Any]:
    """The `limits` storage on the Redis at `url` through redis-py, and its bounded, blocking connection
    pool (which the caller closes)."""
    from redis.asyncio import BlockingConnectionPool

    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_POOL_WAIT_S,
        socket_timeout=REDIS_REPLY_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
    )
    options: dict[str, Any] = {"connection_pool": pool}  # limits types its options as scalars; redis-py takes a pool
    return RedisStorage("async+" + url, implementation="redispy", wrap_exceptions=True, **options), pool


def per_minute(amount: int) -> RateLimitItem:
    """`amount` per minute (a window of `MINUTE_S` seconds)."""
    return RateLimitItemPerSecond(amount, MINUTE_S)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `250ms`, `1.5s`."""
    return f"{max(seconds, 0) * 1000:.0f}ms" if seconds < 1 else f"{seconds:.3g}s"


class Admission:
    """An admitted request: the tokens it reserved, and the headers describing its key's limits.

    `settle(used)` gives back the unused part of the reservation (once), and records the key's usage."""

    def __init__(self, quotas: Quotas, key: ApiKey, reserved: int, windows: list[tuple[RateLimitItem, float]]) -> None:
        self.quotas = quotas
        self.key = key
        self.reserved = reserved
        self.windows = windows  # each token window reserved in, with the time its window resets
        self.headers: dict[str, str] = {}
        self.settled = False

    async def settle(self, usage: Any) -> None:
        """The request ended; `usage` (prompt/completion tokens) when the engine reported it, else None
        (a cancelled or failed request: what it reserved is given back)."""
        if self.settled:
            return
        self.settled = True
        used = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
        if usage is not None:
            self.quotas.telemetry.key_tokens(self.key.id, usage.prompt_tokens, usage.completion_tokens)
        await self.quotas.refund(self.key, self.windows, max(self.reserved - used, 0))


class Quotas:
    """Every key's counters, in one storage (memory, or a shared Redis)."""

    def __init__(self, settings: ServerSettings, telemetry: Telemetry, storage: Storage | None = None) -> None:
        self.telemetry = telemetry
        self.failure_mode = settings.limits_redis_failure
        self.shared = settings.limits_redis_url is not None
        self._pool: Any = None
        if storage is None:
            if settings.limits_redis_url is not None:
                storage, self._pool = redis_storage(settings.limits_redis_url)
            else:
                storage = MemoryStorage()
        self.storage = storage
        self.requests = MovingWindowRateLimiter(storage)
        self.tokens = FixedWindowRateLimiter(storage)
        self._last_failure_log = -math.inf

    # -- backend failures ------------------------------------------------------------------------
    def _backend_failed(self, key: ApiKey, exc: BaseException) -> Refusal | None:
        """Redis failed a call: count and log it (throttled); None in open mode, else the refusal."""
        self.telemetry.limits_backend_failed(self.failure_mode)
        now = time.monotonic()
        if now - self._last_failure_log >= FAILURE_LOG_EVERY_S:
            self._last_failure_log = now
            action = "admitting without limits" if self.failure_mode == "open" else "refusing keys with limits"
            mode = self.failure_mode
            log.error("limits backend unreachable (%s); YAP_LIMITS_REDIS_FAILURE=%s: %s", exc, mode, action)
        if self.failure_mode == "open":
            return None
        message = "the rate-limit store is unreachable and this server fails closed; retry shortly"
        return Refusal("limits_unavailable", key.id, message, 1.0, status=503)

    def _refused(self, refusal: Refusal) -> QuotaExceededError:
        self.telemetry.key_refused(refusal.key_id, refusal.kind)
        return QuotaExceededError(refusal)

    # -- requests --------------------------------------------------------------------------------
    async def admit(self, key: ApiKey, tokens: int) -> Admission:
        """Admit one request of `tokens` (prompt + max_tokens) for `key`, reserving them; raise
        `QuotaExceededError` when a limit refuses it (nothing stays reserved then)."""
        limits = key.limits
        if limits.unlimited:
            self.telemetry.key_admitted(key.id)
            return Admission(self, key, 0, [])
        windows: list[tuple[RateLimitItem, float]] = []
        try:
            token_windows: list[tuple[str, int, RateLimitItem]] = []
            if limits.tpm:
                token_windows.append(("tokens", limits.tpm, per_minute(limits.tpm)))
            if limits.daily_tokens:
                token_windows.append(("daily_tokens", limits.daily_tokens, RateLimitItemPerDay(limits.daily_tokens)))
            for kind, amount, item in token_windows:
                if tokens > amount:  # no wait lets it in: the message says what to change
                    await self.refund(key, windows, tokens)
                    stats = await self.tokens.get_window_stats(item, kind, key.id)
                    wait = stats.reset_time - time.time()
                    message = (
                        f"this request needs up to {tokens} tokens (prompt + max_tokens), over key {key.id!r}'s "
                        f"{kind} limit of {amount}: lower max_tokens or shorten the prompt"
                    )
                    wait = wait if wait > 0 else float(item.get_expiry())
                    raise self._refused(Refusal(kind, key.id, message, wait, amount, stats.remaining))
                if not await self.tokens.hit(item, kind, key.id, cost=tokens):
                    await self.storage.incr(item.key_for(kind, key.id), item.get_expiry(), amount=-tokens)
                    await self.refund(key, windows, tokens)
                    stats = await self.tokens.get_window_stats(item, kind, key.id)
                    wait = max(stats.reset_time - time.time(), 0.001)
                    message = (
                        f"key {key.id!r} has {stats.remaining} of its {amount} {kind.replace('_', ' ')} left and this "
                        f"request reserves {tokens} (prompt + max_tokens); retry in {wait:.1f} s or lower max_tokens"
                    )
                    raise self._refused(Refusal(kind, key.id, message, wait, amount, stats.remaining))
                windows.append((item, time.time() + await self._reset_in(item, key)))
            if limits.rpm:
                item = per_minute(limits.rpm)
                if not await self.requests.hit(item, "requests", key.id):
                    await self.refund(key, windows, tokens)
                    wait = await self._reset_in(item, key, moving=True)
                    message = f"key {key.id!r} is over its {limits.rpm} requests per minute; retry in {wait:.1f} s"
                    raise self._refused(Refusal("requests", key.id, message, wait, limits.rpm, 0))
            admission = Admission(self, key, tokens, windows)
            admission.headers = await self._headers(key)
        except QuotaExceededError as exc:
            exc.refusal.headers.update(await self._headers(key, safe=True))
            raise
        except Exception as exc:
            refusal = self._backend_failed(key, exc)
            if refusal is not None:
                raise self._refused(refusal) from None
            admission = Admission(self, key, 0, [])
        self.telemetry.key_admitted(key.id)
        return admission

    async def aclose(self) -> None:
        """Close the Redis connections (a memory store holds none)."""
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.disconnect()

    async def refund(self, key: ApiKey, windows: list[tuple[RateLimitItem, float]], tokens: int) -> None:
        """Give `tokens` back to each window they were reserved in, unless that window has reset since."""
        if tokens <= 0:
            return
        now = time.time()
        for item, resets_at in windows:
            if now < resets_at:
                kind = "daily_tokens" if isinstance(item, RateLimitItemPerDay) else "tokens"
                try:
                    await self.storage.incr(item.key_for(kind, key.id), item.get_expiry(), amount=-tokens)
                except Exception as exc:
                    self._backend_failed(key, exc)

    async def _reset_in(self, item: RateLimitItem, key: ApiKey, *, moving: bool = False) -> float:
        limiter = self.requests if moving else self.tokens
        kind = "requests" if moving else ("daily_tokens" if isinstance(item, RateLimitItemPerDay) else "tokens")
        stats = await limiter.get_window_stats(item, kind, key.id)
        return max(stats.reset_time - time.time(), 0.001)

    async def _headers(self, key: ApiKey, *, safe: bool = False) -> dict[str, str]:
        """OpenAI's `x-ratelimit-*` and the IETF `RateLimit-Policy`/`RateLimit` for `key`'s minute limits."""
        limits = key.limits
        headers: dict[str, str] = {}
        policies, states = [], []
        try:
            for name, amount, limiter in (("requests", limits.rpm, self.requests), ("tokens", limits.tpm, self.tokens)):
                if not amount:
                    continue
                stats = await limiter.get_window_stats(per_minute(amount), name, key.id)
                reset = max(stats.reset_time - time.time(), 0.0)
                remaining = max(stats.remaining, 0)
                headers[f"x-ratelimit-limit-{name}"] = str(amount)
                headers[f"x-ratelimit-remaining-{name}"] = str(remaining)
                headers[f"x-ratelimit-reset-{name}"] = _duration(reset)
                policies.append(f'"{name}";q={amount};w={MINUTE_S}')
                states.append(f'"{name}";r={remaining};t={math.ceil(reset)}')
        except Exception:
            if not safe:
                raise
            return headers
        if policies:
            headers["RateLimit-Policy"] = ", ".join(policies)
            headers["RateLimit"] = ", ".join(states)
        return headers

    # -- sessions --------------------------------------------------------------------------------
    async def open_session(self, key: ApiKey) -> None:
        """Take one of `key`'s concurrent sessions; raise `QuotaExceededError` when all are in use."""
        cap = key.limits.sessions
        if not cap:
            return
        name = f"sessions/{key.id}"
        try:
            count = await self.storage.incr(name, 86400, amount=1)
            if count > cap:
                await self.storage.incr(name, 86400, amount=-1)
                message = f"key {key.id!r} has all {cap} of its concurrent sessions open; close one, then retry"
                raise self._refused(Refusal("sessions", key.id, message, 1.0, cap, 0))
        except QuotaExceededError:
            raise
        except Exception as exc:
            refusal = self._backend_failed(key, exc)
            if refusal is not None:
                raise self._refused(refusal) from None

    async def close_session(self, key: ApiKey) -> None:
        """Give back a session `open_session` took."""
        if not key.limits.sessions:
            return
        try:
            await self.storage.incr(f"sessions/{key.id}", 86400, amount=-1)
        except Exception as exc:
            self._backend_failed(key, exc)


class QuotaGate:
    """A connection's way into its key's quota: the generation pipeline calls `admit` before the engine."""

    def __init__(self, quotas: Quotas, key: ApiKey) -> None:
        self.quotas = quotas
        self.key = key

    async def admit(self, tokens: int) -> Admission:
        return await self.quotas.admit(self.key, tokens)
