"""The WebSocket URL of a server endpoint, shared by `yap client` (`/ws`) and `yap client completions`."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit


def endpoint_url(server: str, key: str | None, endpoint: str) -> str:
    """The `endpoint` (e.g. `/ws`) URL for a server origin or URL (http(s) read as ws(s)), with `api_key` in
    the query unless the URL already carries one."""
    parts = urlsplit(server if "://" in server else f"ws://{server}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith(endpoint):
        path += endpoint
    query = parts.query
    if key and "api_key=" not in query:
        query = "&".join(q for q in (query, urlencode({"api_key": key})) if q)
    return urlunsplit((scheme, parts.netloc, path, query, ""))
