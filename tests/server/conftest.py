"""Helpers for server tests: settings, a frame recorder that checks the turn invariants, live servers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from yap_cli.loopback import serve_on_loopback
from yap_engines import ChatRequest, Delta, EngineSettings, FakeEngine, InferenceEngine
from yap_server.app import create_app
from yap_server.settings import ServerSettings

KEY = "test-key"
TERMINAL = ("done", "cancelled", "error")


def app_for(engines: dict[str, Any], **overrides: Any) -> Any:
    """`create_app` on injected `engines`; `overrides` name fields of `ServerSettings` or, for the model's
    budgets (`chat_max_len`, `chat_max_out`) and the coalescing interval (`stream_flush_ms`), of `EngineSettings`."""
    engine_names = ("chat_max_len", "chat_max_out", "stream_flush_ms")
    engine_fields = {k: overrides.pop(k) for k in list(overrides) if k in engine_names}
    return create_app(server_settings(**overrides), engines=engines, engine_settings=EngineSettings(**engine_fields))


def server_settings(**overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "text_api_key": KEY,
        "max_concurrent_connections": 4,
        "ws_idle_timeout_s": 30,
        "deploy_mode": "chat",
    }
    values.update(overrides)
    return ServerSettings(**values)


class RecordingFake(FakeEngine):
    """A fake engine that remembers the requests it received."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.requests: list[ChatRequest] = []

    def generate(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        self.requests.append(request)
        return super().generate(request)


def ack_for(session_id: str, request_id: str, kind: str) -> dict[str, Any]:
    """The `ack` a `message` or `followup` gets before its turn's first frame (the seed system's shape)."""
    return {"type": "ack", "session_id": session_id, "request_id": request_id, "payload": {"for": kind, "ok": True}}


def check_turn_invariants(frames: list[dict[str, Any]], turn_ids: set[str], *, ended: bool = True) -> None:
    """Each started turn ends with exactly one terminal frame (at most one so far when not `ended`), and
    nothing of it follows that frame."""
    for rid in turn_ids:
        mine = [f for f in frames if f.get("request_id") == rid and f["type"] not in ("ack", "pong")]
        terminals = [i for i, f in enumerate(mine) if f["type"] in TERMINAL]
        count_ok = len(terminals) == 1 if ended else len(terminals) <= 1
        assert count_ok, f"turn {rid} has terminal frames {[mine[i]['type'] for i in terminals]}"
        assert not terminals or terminals[0] == len(mine) - 1, (
            f"turn {rid} sent {[f['type'] for f in mine[terminals[0] + 1 :]]} after its end"
        )


class Probe:
    """A `/ws` client that records every frame it receives and the turns it started.

    The `ack` of a `message`/`followup` is checked, not returned: it must be `ack_for(...)` and come before
    any other frame of that request (a refused frame gets an `error` instead)."""

    def __init__(self, ws: Any, session_id: str = "s1") -> None:
        self.ws = ws
        self.session_id = session_id
        self.frames: list[dict[str, Any]] = []
        self.turns: set[str] = set()
        self.awaiting_ack: dict[str, str] = {}  # request_id -> the message/followup frame's type

    def send(self, kind: str, payload: dict[str, Any] | None = None, rid: str = "r0", turn: bool = False) -> None:
        if turn:
            self.turns.add(rid)
        if kind in ("message", "followup"):
            self.awaiting_ack[rid] = kind
        self.ws.send_json({"type": kind, "session_id": self.session_id, "request_id": rid, "payload": payload or {}})

    def start(self, rid: str = "start", utterance: str | None = None, **payload: Any) -> dict[str, Any]:
        body = {"chat_prompt": "You are a brief voice assistant.", **payload}
        if utterance is not None:
            body["user_utterance"] = utterance
        self.send("start", body, rid, turn=utterance is not None)
        return self.expect("ack")

    def recv(self) -> dict[str, Any]:
        while True:
            message = self.ws.receive_json()
            self.frames.append(message)
            kind = self.awaiting_ack.pop(message.get("request_id"), None)
            if kind is None:
                return message
            if message["type"] == "ack":
                assert message == ack_for(self.session_id, message["request_id"], kind), message
                continue
            assert message["type"] == "error", f"{message['type']} before the ack of {kind} {message['request_id']}"
            return message

    def expect(self, kind: str) -> dict[str, Any]:
        message = self.recv()
        assert message["type"] == kind, message
        return message

    def until_terminal(self, rid: str) -> list[dict[str, Any]]:
        """Frames up to and including the terminal frame of turn `rid`."""
        got = []
        while True:
            message = self.recv()
            got.append(message)
            if message["type"] in TERMINAL and message["request_id"] == rid:
                return got

    def check(self) -> None:
        check_turn_invariants(self.frames, self.turns)


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine(seed=1)


@contextlib.contextmanager
def served(engine: InferenceEngine, **overrides: Any) -> Iterator[TestClient]:
    app = app_for({"chat": engine}, **overrides)
    with TestClient(app) as client:
        yield client


@contextlib.asynccontextmanager
async def live_server(
    engine: InferenceEngine, engines: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[str]:
    """A real uvicorn server on 127.0.0.1 in this event loop; yields its ws:// origin."""
    app = app_for(engines or {"chat": engine}, **overrides)
    async with serve_on_loopback(app) as port:
        yield f"ws://127.0.0.1:{port}"
