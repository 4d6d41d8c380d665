"""Browser origin policy, per-IP auth-failure throttling and key redaction in server logs.

Everything here wraps the whole app (`security_middleware(settings)` in `create_app`), so every
route, present or future, gets it without code of its own:

- `ALLOWED_ORIGINS` (comma-separated origins, `*` for any): HTTP routes answer CORS through
  Starlette's `CORSMiddleware`; a WebSocket handshake that carries an `Origin` header (browsers
  always send one) is refused with HTTP 403 unless the origin is listed or is the server's own
  (same host and port). Clients that send no `Origin` (SDKs, servers) are not affected.
- `AUTH_FAILURE_MAX_PER_WINDOW` failed authentications from one client address within
  `AUTH_FAILURE_WINDOW_SECONDS` block that address on every route but `/healthz` until the
  window has room again: HTTP 429 with `Retry-After`, or a refused WebSocket handshake. A route
  signals a failure the way the protocol does: HTTP 401, or a WebSocket closed with 1008 whose
  reason names authentication (`authentication_failed`). Behind a proxy, run uvicorn with
  `--proxy-headers` so the client address is the real one.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from .frames import CLOSE_POLICY_VIOLATION
from .settings import ServerSettings

log = logging.getLogger("yap.security")

KEY_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "X-Client-Id"]
PUBLIC_PATHS = ("/healthz", "/health")
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error")


def security_middleware(settings: ServerSettings) -> list[Middleware]:
    """The middleware stack, outermost first: auth-failure throttle, CORS, WebSocket origin check."""
    origins = settings.allowed_origin_list
    return [
        Middleware(
            AuthFailureThrottle,
            max_failures=settings.auth_failure_max_per_window,
            window_s=settings.auth_failure_window_seconds,
        ),
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=KEY_HEADERS,
            max_age=600,
        ),
        Middleware(WebSocketOriginGuard, allowed_origins=origins),
    ]


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, body: dict[str, Any], **headers: str
) -> None:
    """Answer an HTTP request, or refuse a WebSocket handshake (an HTTP response when the server allows it)."""
    response = JSONResponse(body, status_code=status, headers=headers or None)
    if scope["type"] == "http":
        await response(scope, receive, send)
        return
    websocket = WebSocket(scope, receive, send)
    if "websocket.http.response" in scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(CLOSE_POLICY_VIOLATION, body["error"]["code"])


class WebSocketOriginGuard:
    """Refuse WebSocket handshakes from browser origins that are neither allowed nor the server's own."""

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = {origin.rstrip("/") for origin in allowed_origins}

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        if origin is None or "*" in self.allowed or origin.rstrip("/") in self.allowed:
            return True
        return bool(host) and urlsplit(origin).netloc.lower() == str(host).lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
            origin = headers.get("origin")
            if not self.origin_allowed(origin, headers.get("host")):
                log.warning("refused a WebSocket handshake from origin %r", origin[:200] if origin else origin)
                message = f"origin {origin!r} is not allowed; add it to ALLOWED_ORIGINS on the server"
                await _refuse(scope, receive, send, 403, {"error": {"code": "origin_not_allowed", "message": message}})
                return
        await self.app(scope, receive, send)


class FailureLedger:
    """Failed authentications per client address over a sliding window, for at most `max_addresses`
    addresses (the least recently failing are forgotten first, so memory stays bounded)."""

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0 and self.window_s > 0

    def _recent(self, address: str) -> deque[float] | None:
        events = self._failures.get(address)
        if events is None:
            return None
        now = self._clock()
        while events and now - events[0] >= self.window_s:
            events.popleft()
        if not events:
            del self._failures[address]
            return None
        return events

    def record(self, address: str) -> None:
        if not self.enabled:
            return
        events = self._recent(address) or deque()
        events.append(self._clock())
        self._failures[address] = events
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def blocked_for(self, address: str) -> float | None:
        """Seconds until `address` may try again, or None when it is not blocked."""
        if not self.enabled:
            return None
        events = self._recent(address)
        if events is None or len(events) < self.max_failures:
            return None
        return max(events[-self.max_failures] + self.window_s - self._clock(), 0.001)

    @property
    def tracked(self) -> int:
        return len(self._failures)


def _is_auth_failure(message: Message) -> bool:
    kind = message["type"]
    if kind in ("http.response.start", "websocket.http.response.start"):
        return bool(message.get("status") == 401)
    if kind == "websocket.close":
        reason = str(message.get("reason") or "").lower()
        return message.get("code") == CLOSE_POLICY_VIOLATION and "auth" in reason
    return False


class AuthFailureThrottle:
    """Pure-ASGI middleware: count the authentication failures every route reports per client
    address, and refuse an address that failed too often (429 / refused handshake) until its window
    has room again. `/healthz` stays open (load balancers)."""

    def __init__(self, app: ASGIApp, max_failures: int, window_s: float, max_addresses: int = 10_000) -> None:
        self.app = app
        self.ledger = FailureLedger(max_failures, window_s, max_addresses)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.ledger.enabled or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        address = _client_address(scope)
        wait = self.ledger.blocked_for(address)
        if wait is not None:
            retry = math.ceil(wait)
            message = f"too many failed authentication attempts from this address; retry in {retry} s"
            body = {"error": {"code": "rate_limited", "message": message, "retry_after_s": retry}}
            await _refuse(scope, receive, send, 429, body, **{"Retry-After": str(retry)})
            return
        counted = False

        async def observing_send(message: Message) -> None:
            nonlocal counted
            if not counted and _is_auth_failure(message):
                counted = True
                self.ledger.record(address)
            await send(message)

        await self.app(scope, receive, observing_send)


class KeyRedactingFilter(logging.Filter):
    """Replaces every API key in a log record (message and arguments, e.g. a URL's `?api_key=`)
    with `[redacted]`. One instance per logger; `add_keys` extends it (several apps per process)."""

    def __init__(self, api_keys: Iterable[str] = ()) -> None:
        super().__init__()
        self.api_keys: set[str] = set()
        self.add_keys(api_keys)

    def add_keys(self, api_keys: Iterable[str]) -> None:
        self.api_keys.update(k for k in api_keys if k)

    def _redact(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        for key in self.api_keys:
            value = value.replace(key, "[redacted]")
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        if self.api_keys:
            record.msg = self._redact(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(self._redact(arg) for arg in record.args)
            elif isinstance(record.args, dict):
                record.args = {name: self._redact(arg) for name, arg in record.args.items()}
        return True


def redact_keys_in_server_logs(api_keys: Iterable[str]) -> None:
    """Install (or extend) a `KeyRedactingFilter` on uvicorn's and Yap's loggers: uvicorn logs
    request paths with their query string, where browsers put `?api_key=`."""
    keys = tuple(api_keys)
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        existing = next((f for f in logger.filters if isinstance(f, KeyRedactingFilter)), None)
        if existing is None:
            logger.addFilter(KeyRedactingFilter(keys))
        else:
            existing.add_keys(keys)
