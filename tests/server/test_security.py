"""Security over a real socket: auth bypass attempts, digest-only key lookups, keys kept out of logs
and error messages, what `/healthz` and `/metrics` reveal, the browser origin policy, and per-address
auth-failure throttling."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from yap_cli.loopback import serve_on_loopback
from yap_engines import FakeEngine
from yap_server.app import create_app
from yap_server.keys import ApiKey, KeyRegistry
from yap_server.security import FailureLedger, KeyRedactingFilter
from yap_server.telemetry import Telemetry, TelemetrySettings

from .conftest import server_settings

SECRET = "s3cret-Key-0123456789"


@contextlib.asynccontextmanager
async def origin_of(telemetry: Telemetry | None = None, **overrides: Any) -> AsyncIterator[str]:
    """A live server (`http://127.0.0.1:port`) with key `SECRET`; auth throttling off unless asked."""
    values = {"text_api_key": SECRET, "auth_failure_max_per_window": 0, **overrides}
    app = create_app(server_settings(**values), engines={"chat": FakeEngine(seed=1)}, telemetry=telemetry)
    async with serve_on_loopback(app) as port:
        yield f"http://127.0.0.1:{port}"


async def ws_outcome(server: str, path: str = "/ws", **connect: Any) -> tuple[str, Any]:
    """("accepted", first frame after a ping) | ("closed", (code, error frame)) | ("refused", HTTP status)."""
    url = server.replace("http://", "ws://") + path
    try:
        async with websockets.connect(url, **connect) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):  # a refused client may be closed already
                await ws.send(json.dumps({"type": "ping", "session_id": "s", "request_id": "p", "payload": {}}))
            try:
                frame = json.loads(await ws.recv())
            except websockets.ConnectionClosed as closed:
                return "closed", (closed.rcvd.code if closed.rcvd else None, None)
            if frame["type"] == "error":
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.recv()
                return "closed", (ws.close_code, frame)
            return "accepted", frame
    except InvalidStatus as exc:
        return "refused", exc.response.status_code


# -- auth bypass attempts ----------------------------------------------------------------------

BYPASSES: list[tuple[str, dict[str, str], str]] = [
    ("no key", {}, ""),
    ("wrong key", {"X-API-Key": "wrong"}, ""),
    ("empty X-API-Key", {"X-API-Key": ""}, ""),
    ("empty query key", {}, "?api_key="),
    ("bearer without token", {"Authorization": "Bearer"}, ""),
    ("key without scheme", {"Authorization": SECRET}, ""),
    ("basic scheme", {"Authorization": f"Basic {SECRET}"}, ""),
    ("wrong header name", {"X-Api-Token": SECRET}, ""),
    ("key in a cookie", {"Cookie": f"api_key={SECRET}"}, ""),
    ("upper-cased key", {"X-API-Key": SECRET.upper()}, ""),
    ("lower-cased key", {"X-API-Key": SECRET.lower()}, ""),
    ("key with a suffix", {"X-API-Key": SECRET + "x"}, ""),
    ("key prefix", {"X-API-Key": SECRET[:-1]}, ""),
    ("very long key", {"X-API-Key": SECRET * 200}, ""),  # 4 KiB (header lines past 8 KiB: see README)
    ("wrong query param name", {}, f"?apikey={SECRET}"),
    ("second of two keys wrong", {"X-API-Key": f"{SECRET},other"}, ""),
]


async def test_every_bypass_attempt_is_refused_on_http_and_websocket() -> None:
    async with origin_of() as origin:
        async with httpx.AsyncClient(base_url=origin) as http:
            for name, headers, query in BYPASSES:
                response = await http.get(f"/status{query}", headers=headers)
                assert response.status_code == 401, name
                assert response.json()["error"]["code"] == "authentication_failed", name
                outcome, (code, frame) = await ws_outcome(origin, f"/ws{query}", additional_headers=headers)
                assert outcome == "closed" and code == 1008, name
                assert frame["payload"]["code"] == "authentication_failed", name


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"X-API-Key": SECRET}, ""),
        ({"x-api-key": SECRET}, ""),  # header names are case-insensitive
        ({"Authorization": f"Bearer {SECRET}"}, ""),
        ({"Authorization": f"bearer {SECRET}"}, ""),  # so is the auth scheme (RFC 9110)
        ({}, f"?api_key={SECRET}"),
    ],
)
async def test_the_documented_places_for_the_key_work(headers: dict[str, str], query: str) -> None:
    async with origin_of() as origin:
        async with httpx.AsyncClient(base_url=origin) as http:
            assert (await http.get(f"/status{query}", headers=headers)).status_code == 200
        outcome, frame = await ws_outcome(origin, f"/ws{query}", additional_headers=headers)
        assert outcome == "accepted" and frame["type"] == "pong"


def test_keys_are_looked_up_by_digest_and_never_kept() -> None:
    """The registry keeps only SHA-256 digests: a presented key is hashed, so a lookup's timing can
    depend on its digest only, and no secret sits in the registry's memory."""
    keys = ("short", "a-much-longer-key-" * 8)
    registry = KeyRegistry(keys)
    held = repr(vars(registry))
    assert all(key not in held for key in keys)
    assert registry.identify("short") == ApiKey("env-1") and registry.identify("a-much-longer-key-" * 8) is not None
    for presented in ("x", "shor", "short ", "y" * 10_000, "", None):
        assert registry.identify(presented) is None


# -- keys stay out of logs and messages ----------------------------------------------------------


@contextlib.contextmanager
def server_log() -> Iterator[list[str]]:
    """Every formatted record of uvicorn's and Yap's loggers at INFO and above (attach after start)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(logging.INFO)
    names = ("uvicorn.error", "uvicorn.access", "yap")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


async def test_keys_never_reach_the_logs_or_error_messages() -> None:
    guess = "guessed-key-abcdef"
    async with origin_of() as origin:
        with server_log() as lines:
            async with httpx.AsyncClient(base_url=origin) as http:
                ok = await http.get(f"/status?api_key={SECRET}")
                refused = await http.get(f"/status?api_key={guess}")
            accepted, _ = await ws_outcome(origin, f"/ws?api_key={SECRET}")
            closed, (_, frame) = await ws_outcome(origin, f"/ws?api_key={guess}")
    assert ok.status_code == 200 and refused.status_code == 401 and accepted == "accepted" and closed == "closed"
    assert guess not in refused.text and guess not in json.dumps(frame)
    assert SECRET not in refused.text and SECRET not in json.dumps(frame)
    logged = "\n".join(lines)
    assert "/status" in logged and "WebSocket /ws" in logged  # uvicorn did log the requests...
    assert SECRET not in logged  # ...with the key replaced
    assert "[redacted]" in logged


async def test_healthz_reveals_nothing_and_needs_no_key() -> None:
    async with origin_of() as origin:
        async with httpx.AsyncClient(base_url=origin) as http:
            response = await http.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert SECRET not in response.text and "fake" not in response.text


@pytest.mark.parametrize("public", [False, True])
async def test_metrics_need_the_key_unless_made_public(public: bool) -> None:
    telemetry = Telemetry.build(TelemetrySettings(metrics_public=public))
    try:
        async with origin_of(telemetry=telemetry) as origin:
            async with httpx.AsyncClient(base_url=origin) as http:
                anonymous = await http.get("/metrics")
                keyed = await http.get("/metrics", headers={"X-API-Key": SECRET})
    finally:
        telemetry.shutdown()
    assert keyed.status_code == 200
    assert anonymous.status_code == (200 if public else 401)


# -- browsers: CORS and the WebSocket origin check -----------------------------------------------

APP_ORIGIN = "https://app.example"


async def test_cors_answers_only_allowed_origins() -> None:
    async with origin_of(allowed_origins=f"{APP_ORIGIN}, https://other.example") as origin:
        async with httpx.AsyncClient(base_url=origin, headers={"X-API-Key": SECRET}) as http:
            preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-api-key"}
            allowed = await http.options("/status", headers={"Origin": APP_ORIGIN, **preflight})
            denied = await http.options("/status", headers={"Origin": "https://evil.example", **preflight})
            simple_allowed = await http.get("/status", headers={"Origin": APP_ORIGIN})
            simple_denied = await http.get("/status", headers={"Origin": "https://evil.example"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
    assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers
    assert simple_allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "access-control-allow-origin" not in simple_denied.headers


async def test_websocket_handshakes_from_foreign_origins_are_refused() -> None:
    async with origin_of(allowed_origins=APP_ORIGIN) as origin:
        query = f"/ws?api_key={SECRET}"
        assert (await ws_outcome(origin, query, origin="https://evil.example"))[0:2] == ("refused", 403)
        assert (await ws_outcome(origin, query, origin=APP_ORIGIN))[0] == "accepted"
        assert (await ws_outcome(origin, query, origin=origin))[0] == "accepted"  # same origin
        assert (await ws_outcome(origin, query))[0] == "accepted"  # no Origin: not a browser
    async with origin_of() as origin:  # default: same origin only
        assert (await ws_outcome(origin, f"/ws?api_key={SECRET}", origin=APP_ORIGIN)) == ("refused", 403)
    async with origin_of(allowed_origins="*") as origin:
        assert (await ws_outcome(origin, f"/ws?api_key={SECRET}", origin=APP_ORIGIN))[0] == "accepted"


# -- per-address auth-failure throttling ---------------------------------------------------------


async def test_repeated_auth_failures_block_the_address_on_every_route_but_healthz() -> None:
    async with origin_of(auth_failure_max_per_window=3, auth_failure_window_seconds=60) as origin:
        async with httpx.AsyncClient(base_url=origin) as http:
            assert (await http.get("/status", headers={"X-API-Key": "guess-1"})).status_code == 401
            assert (await ws_outcome(origin, "/ws?api_key=guess-2"))[0] == "closed"  # WS failures count too
            assert (await http.get("/metrics", headers={"X-API-Key": "guess-3"})).status_code == 401
            blocked = await http.get("/status", headers={"X-API-Key": SECRET})  # even the right key now
            assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
            assert blocked.json()["error"]["code"] == "rate_limited"
            assert (await ws_outcome(origin, f"/ws?api_key={SECRET}")) == ("refused", 429)
            assert (await http.get("/healthz")).status_code == 200


async def test_successes_do_not_count_towards_the_block() -> None:
    async with origin_of(auth_failure_max_per_window=2) as origin:
        async with httpx.AsyncClient(base_url=origin, headers={"X-API-Key": SECRET}) as http:
            for _ in range(10):
                assert (await http.get("/status")).status_code == 200
            assert (await ws_outcome(origin, f"/ws?api_key={SECRET}"))[0] == "accepted"


def test_the_failure_ledger_forgets_old_failures_and_bounds_its_memory() -> None:
    now = [0.0]
    ledger = FailureLedger(max_failures=2, window_s=10, max_addresses=2, clock=lambda: now[0])
    ledger.record("a")
    assert ledger.blocked_for("a") is None
    ledger.record("a")
    assert ledger.blocked_for("a") == pytest.approx(10)
    now[0] = 10.5
    assert ledger.blocked_for("a") is None and ledger.tracked == 0
    for address in ("a", "b", "c"):
        ledger.record(address)
    assert ledger.tracked == 2  # the least recently failing address was forgotten
    assert FailureLedger(max_failures=0, window_s=10).blocked_for("a") is None


async def test_every_app_in_a_process_adds_its_keys_to_the_one_log_redactor() -> None:
    """Several apps in one process (tests, notebooks) share uvicorn's loggers."""
    async with origin_of(), origin_of(text_api_key="another-secret-key"):
        redactors = [f for f in logging.getLogger("uvicorn.access").filters if isinstance(f, KeyRedactingFilter)]
        assert len(redactors) == 1 and {SECRET, "another-secret-key"} <= redactors[0].api_keys
