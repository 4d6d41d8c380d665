"""`GET /openapi.json` (the OpenAPI 3.1 document of every HTTP route) and `GET /docs` (it, rendered).

The document is written here, route by route, and a test walks the app's routes so that a route
mounted without an entry here fails. WebSocket routes are not HTTP operations: the document lists them
under `x-websockets` (path, frames in and out, where the frames are described), and `/docs` renders
them with their frames, beside the HTTP operations. `/docs` is HTML built by the server: no script, no
external request, a strict content-security policy.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

KEYED: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]
HTML = {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
ERROR = {"$ref": "#/components/schemas/Error"}
RATE_HEADERS = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}},
    "RateLimit-Policy": {"description": "IETF: the key's limits", "schema": {"type": "string"}},
    "RateLimit": {"description": "IETF: what remains and when it resets", "schema": {"type": "string"}},
    "x-ratelimit-remaining-requests": {"description": "OpenAI's: requests left", "schema": {"type": "string"}},
    "x-ratelimit-remaining-tokens": {"description": "OpenAI's: tokens left", "schema": {"type": "string"}},
}


def _json(
    description: str, schema: dict[str, Any] | None = None, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    response["content"] = {"application/json": {"schema": schema or {"type": "object"}}}
    if headers:
        response["headers"] = headers
    return response


def _op(
    summary: str, description: str, responses: dict[str, Any], *, keyed: bool = True, **extra: Any
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "description": description, "responses": responses}
    if keyed:
        operation["security"] = KEYED
        responses.setdefault("401", _json("missing or wrong API key", ERROR))
    else:
        operation["security"] = []
    operation.update(extra)
    return operation


CHAT_BODY = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "description": "a served model id (GET /v1/models)"},
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {"role": {"type": "string"}, "content": {"type": ["string", "array"]}},
            },
        },
        "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
        "response_format": {"type": "object"},
        "tools": {"type": "array", "items": {"type": "object"}},
    },
}
COMPLETION_BODY = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        "model": {"type": "string", "description": "a served model id (GET /v1/models)"},
        "prompt": {"type": "array", "items": {"type": "integer", "minimum": 0}, "description": "token ids"},
        "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number"},
    },
}
EMBED_BODY = {
    "type": "object",
    "required": ["input"],
    "properties": {"input": {"type": ["string", "array"]}, "model": {"type": "string"}},
}

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {"get": _op("Liveness", "200 while every engine is healthy, else 503 naming the failing part.",
                            {"200": _json("healthy"), "503": _json("a part is failing")}, keyed=False)},
    "/health": {"get": _op("Readiness", "200 when every engine answers its health check in time, else 503.",
                           {"200": _json("ready"), "503": _json("not ready")}, keyed=False)},
    "/status": {"get": _op("Capacity and deployment", "Active and maximum connections, generations, engines, models.",
                           {"200": _json("the status")})},
    "/metrics": {"get": _op("Prometheus metrics", "Yap's metrics (usage per key id included) and the engine's. "
                            "Keyed unless METRICS_PUBLIC=1.",
                            {"200": {"description": "Prometheus text",
                                     "content": {"text/plain": {"schema": {"type": "string"}}}}})},
    "/v1/chat/completions": {"post": _op(
        "Chat completion (OpenAI-compatible)",
        "Streaming (SSE) or one JSON object. Admission reserves prompt + max_tokens from the key's token quota; "
        "a refused request gets 429 `rate_limit_exceeded` before the engine sees it. Every answer carries the "
        "key's rate-limit headers.",
        {"200": _json("the completion (or an SSE stream of chunks)", headers=RATE_HEADERS),
         "400": _json("invalid request", ERROR), "404": _json("model not served", ERROR),
         "429": _json("over the key's quota", ERROR, RATE_HEADERS),
         "503": _json("no chat model deployed, or the rate-limit store is down (fail closed)", ERROR)},
        requestBody={"required": True, "content": {"application/json": {"schema": CHAT_BODY}}},
    )},
    "/v1/completions": {"post": _op(
        "Completion from a raw token prompt (vLLM-compatible)",
        "`prompt` is a list of token ids, as a router or a Yap edge sends it to resume a turn from the tokens "
        "already streamed; the other fields are read as on /v1/chat/completions. Text prompts are refused.",
        {"200": _json("the completion (or an SSE stream of chunks)", headers=RATE_HEADERS),
         "400": _json("invalid request", ERROR), "404": _json("model not served", ERROR),
         "429": _json("over the key's quota", ERROR, RATE_HEADERS),
         "503": _json("no chat model deployed", ERROR)},
        requestBody={"required": True, "content": {"application/json": {"schema": COMPLETION_BODY}}},
    )},
    "/v1/models": {"get": _op("Served models", "OpenAI's model list, with max_model_len and max_completion_tokens.",
                              {"200": _json("the models")})},
    "/embeddings": {"post": _op("Embeddings (seed 002 path)", "Sentence embeddings (all-MiniLM-L6-v2).",
                                {"200": _json("the embeddings"), "400": _json("invalid input", ERROR)},
                                requestBody={"required": True,
                                             "content": {"application/json": {"schema": EMBED_BODY}}})},
    "/v1/embeddings": {"post": _op("Embeddings (OpenAI-compatible)", "Sentence embeddings (all-MiniLM-L6-v2).",
                                   {"200": _json("the embeddings"), "400": _json("invalid input", ERROR)},
                                   requestBody={"required": True,
                                                "content": {"application/json": {"schema": EMBED_BODY}}})},
    "/dashboard": {"get": _op("Dashboard page", "The operator's page; it asks for the key and keeps it out of URLs.",
                              {"200": HTML},
                              keyed=False)},
    "/dashboard/stats": {"get": _op("Dashboard data", "Everything the dashboard shows, from the /metrics counters.",
                                    {"200": _json("the stats")})},
    "/dashboard/app.js": {"get": _op("Dashboard script", "The page's script (served by the package).",
                                     {"200": {"description": "JavaScript",
                                              "content": {"text/javascript": {"schema": {"type": "string"}}}}},
                                     keyed=False)},
    "/dashboard/app.css": {"get": _op("Dashboard style", "The page's style sheet.",
                                      {"200": {"description": "CSS",
                                               "content": {"text/css": {"schema": {"type": "string"}}}}},
                                      keyed=False)},
    "/openapi.json": {"get": _op("This document", "The OpenAPI 3.1 document of every HTTP route.",
                                 {"200": _json("the document")}, keyed=False)},
    "/docs": {"get": _op("This document, rendered", "HTML, offline.",
                         {"200": HTML},
                         keyed=False)},
}  # fmt: skip

WEBSOCKETS: dict[str, dict[str, Any]] = {
    "/ws": {
        "summary": "The Yap protocol: sessions, turns, barge-in, tool decisions",
        "client_frames": ["start", "message", "followup", "cancel", "end", "ping", "pong"],
        "server_frames": ["ack", "toolcall", "reasoning", "token", "done", "cancelled", "error", "pong", "session_end"],
        "frames": "README.md#the-server",
        "refusals": "handshake over the key's session limit: HTTP 429 with Retry-After; in a session, a turn "
        "over its quota ends with `error` code `rate_limited` carrying retry_after_s, limit and remaining",
    },
    "/v1/responses": {
        "summary": "OpenAI's Responses API over a WebSocket (Pipecat's service)",
        "client_frames": ["response.create", "response.cancel"],
        "server_frames": [
            "response.created",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.function_call_arguments.done",
            "response.completed",
            "response.incomplete",
            "response.failed",
            "error",
        ],
        "frames": "README.md#pipecat-responses-api-over-websocket",
        "refusals": "handshake over the key's session limit: HTTP 429; a response over its quota: an `error` "
        "event code `rate_limit_exceeded` (with retry_after_s), then `response.failed`",
    },
    "/ws/completions": {
        "summary": "Thinking-effort jobs with structured output (seed 002's orchestrator)",
        "client_frames": ["completion", "cancel", "ping", "pong"],
        "server_frames": ["result", "error", "ping", "pong"],
        "frames": "README.md#thinking-effort-with-structured-output-embeddings-dashboard",
        "refusals": "handshake over the key's session limit: HTTP 429; a job over its quota: `result` status "
        "`error`, code `rate_limited`, with retry_after_s",
    },
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (HTTP operations in `paths`, WebSocket routes in `x-websockets`)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Yap",
            "version": "1",
            "description": "Real-time conversational inference. Keys go in X-API-Key or Authorization: Bearer "
            "(?api_key= for browsers' WebSockets). The WebSocket routes are listed under x-websockets.",
        },
        "paths": PATHS,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                }
            },
        },
        "x-websockets": WEBSOCKETS,
    }


async def openapi_json(request: Request) -> JSONResponse:
    """`GET /openapi.json`."""
    return JSONResponse(openapi_document())


DOCS_STYLE = (
    "body{font:14px system-ui,sans-serif;max-width:60em;margin:2em auto;color:#222}code,pre{background:#f4f4f4}"
    "pre{padding:.5em;overflow:auto;font-size:12px}h3{margin-bottom:.2em}.m{font-weight:bold;color:#06c}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(DOCS_STYLE.encode()).digest()).decode()
DOCS_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def render_docs(document: dict[str, Any]) -> str:
    """`document` as one HTML page: each operation and each WebSocket route, with anchors."""
    esc = html.escape
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Yap API</title><style>{DOCS_STYLE}"
        "</style></head><body>",
        f"<h1>{esc(document['info']['title'])} API</h1><p>{esc(document['info']['description'])}</p>",
        "<p>The machine-readable document: <a href='openapi.json'>openapi.json</a> (OpenAPI 3.1).</p>",
        "<h2>HTTP</h2>",
    ]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            anchor = f"{method}-{path.strip('/').replace('/', '-') or 'root'}"
            keyed = "API key" if operation.get("security") else "public"
            parts.append(
                f"<h3 id='{esc(anchor)}'><span class='m'>{method.upper()}</span> <code>{esc(path)}</code></h3>"
                f"<p><b>{esc(operation['summary'])}</b> ({keyed}). {esc(operation['description'])}</p>"
            )
            codes = ", ".join(f"{code} {esc(r['description'])}" for code, r in operation["responses"].items())
            parts.append(f"<p>Responses: {codes}</p>")
            if body := operation.get("requestBody"):
                schema = body["content"]["application/json"]["schema"]
                parts.append(f"<details><summary>request body</summary><pre>{esc(json.dumps(schema, indent=2))}</pre>"
                             "</details>")  # fmt: skip
    parts.append("<h2>WebSockets</h2>")
    for path, route in document["x-websockets"].items():
        anchor = "ws-" + path.strip("/").replace("/", "-")
        parts.append(
            f"<h3 id='{esc(anchor)}'><span class='m'>WS</span> <code>{esc(path)}</code></h3>"
            f"<p><b>{esc(route['summary'])}</b> (API key). Frames: described in "
            f"<code>{esc(route['frames'])}</code>.</p>"
            f"<p>Client frames: {', '.join(f'<code>{esc(f)}</code>' for f in route['client_frames'])}</p>"
            f"<p>Server frames: {', '.join(f'<code>{esc(f)}</code>' for f in route['server_frames'])}</p>"
            f"<p>Refusals: {esc(route['refusals'])}</p>"
        )
    parts.append("</body></html>")
    return "".join(parts)


async def docs(request: Request) -> HTMLResponse:
    """`GET /docs`: the document, rendered by the server (offline, no script)."""
    headers = {"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff"}
    return HTMLResponse(render_docs(openapi_document()), headers=headers)
