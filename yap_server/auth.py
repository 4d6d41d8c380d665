"""API keys on the wire: where a client may put them, the one check every keyed route makes, and the 401.

`authenticate(conn)` is that check: it looks the presented key up in the app's `KeyRegistry`
(`keys.py`), which holds `TEXT_API_KEY`/`ORCH_API_KEY` (unlimited) and the keys of `YAP_KEYS_FILE`.
Keys are never logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from .keys import ApiKey

WHERE_KEYS_GO = "send X-API-Key, Authorization: Bearer, or ?api_key="


def presented_key(conn: HTTPConnection) -> str | None:
    """The key from `X-API-Key`, `Authorization: Bearer`, or `?api_key=` (browsers cannot set WS headers)."""
    if key := conn.headers.get("x-api-key"):
        return key
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return conn.query_params.get("api_key") or None


def authenticate(conn: HTTPConnection) -> ApiKey | None:
    """The key `conn` presents, identified by the app's key registry; None when missing, unknown or revoked."""
    return conn.state.app.keys.identify(presented_key(conn))


def unauthorized() -> JSONResponse:
    """The 401 answer of every keyed HTTP route."""
    message = f"missing or wrong API key: {WHERE_KEYS_GO}"
    return JSONResponse({"error": {"code": "authentication_failed", "message": message}}, status_code=401)
