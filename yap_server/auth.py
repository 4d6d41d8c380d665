"""API keys: where a client may put them, and a constant-time check. Keys are never logged."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

WHERE_KEYS_GO = "send X-API-Key, Authorization: Bearer, or ?api_key="


def presented_key(conn: HTTPConnection) -> str | None:
    """The key from `X-API-Key`, `Authorization: Bearer`, or `?api_key=` (browsers cannot set WS headers)."""
    if key := conn.headers.get("x-api-key"):
        return key
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return conn.query_params.get("api_key") or None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def key_is_valid(presented: str | None, keys: Iterable[str]) -> bool:
    """Compare against every configured key in constant time, with no early exit.

    Both sides are hashed first, so `compare_digest` always compares equal-length digests: the
    time taken reveals neither a key's content nor its length.
    """
    if not presented:
        return False
    given = _digest(presented)
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, _digest(key))
    return matched


def unauthorized() -> JSONResponse:
    """The 401 answer of every keyed HTTP route."""
    message = f"missing or wrong API key: {WHERE_KEYS_GO}"
    return JSONResponse({"error": {"code": "authentication_failed", "message": message}}, status_code=401)
