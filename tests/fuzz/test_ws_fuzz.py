"""Protocol fuzzing of `WS /ws` over a real socket (uvicorn on 127.0.0.1, `websockets` client).

Hypothesis draws sequences of client actions (envelopes with fuzzed payloads, broken JSON, deep and
oversize frames, sentinels, invalid UTF-8, binary frames, pauses mid-stream). After every action a
`ping` barrier proves the connection still answers, and these invariants are checked:

- the server answered the frame, or closed with a documented close code;
- no ERROR log record or escaped exception on the server;
- every turn (a `request_id` that started one) ends with exactly one terminal frame, and no frame
  of that turn follows it;
- a separate control session still completes a turn, and no engine request or slot is left over.

`YAP_FUZZ_FRAMES` sets the number of generated frames (default 300; `make fuzz` runs 10,000).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server.conftest import TERMINAL, check_turn_invariants
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from .frames import Action, actions
from .harness import KEY, MAX_MESSAGE_BYTES, FuzzServer, target_frames

# Documented closes of `/ws` (protocol.md): 1000 end, 1008 auth, 1009 transport size limit,
# 1011 internal, 1013 capacity, 4000 idle; 1007 is the WebSocket transport refusing invalid UTF-8.
DOCUMENTED_CLOSES = {1000, 1007, 1008, 1009, 1011, 1013, 4000}
ANSWERS = ("error", "ack", "cancelled", "session_end", "pong")
MIN_ACTIONS, MAX_ACTIONS = 10, 20


class WsFuzzClient:
    """One fuzzing client: sends actions, runs a ping barrier after each, checks the invariants."""

    def __init__(self, server: FuzzServer) -> None:
        self.server = server
        self.ids = itertools.count()
        self.sent = 0
        self.closes: list[int] = []
        self.ws: ClientConnection = self._connect()
        self.frames: list[dict[str, Any]] = []
        self.turns: set[str] = set()

    def _connect(self) -> ClientConnection:
        self.frames, self.turns = [], set()
        return connect(f"{self.server.ws_url}/ws?api_key={KEY}", max_size=None, proxy=None, open_timeout=10)

    def _recv(self, timeout: float = 15) -> dict[str, Any]:
        frame = dict(json.loads(self.ws.recv(timeout=timeout)))
        self.frames.append(frame)
        return frame

    def _barrier(self) -> list[dict[str, Any]]:
        """Ping and read up to the matching pong; returns the frames that came before it."""
        rid = f"barrier-{next(self.ids)}"
        self.ws.send(json.dumps({"type": "ping", "session_id": "fuzz", "request_id": rid, "payload": {}}))
        got = []
        deadline = time.monotonic() + 15
        while (frame := self._recv(max(deadline - time.monotonic(), 0.01)))["type"] != "pong" or (
            frame["request_id"] != rid
        ):
            got.append(frame)
        return got

    def _prepare(self, action: Action) -> tuple[str | bytes | None, bool]:
        """What to send, and whether the server must answer it before the barrier."""
        if action.kind == "pause":
            return None, False
        if action.kind in ("invalid_utf8", "binary"):
            return action.data, True
        if action.kind == "text":
            try:
                parsed = json.loads(action.text)
            except (ValueError, RecursionError):
                parsed = None
            silent = isinstance(parsed, dict) and parsed.get("type") == "pong"
            return action.text, not silent
        assert action.envelope is not None
        rid = f"r{next(self.ids)}"
        envelope = {**action.envelope, "request_id": rid}
        text = json.dumps(envelope)
        kind, payload = envelope["type"], envelope["payload"]
        fits = len(text.encode("utf-8", "surrogatepass")) <= MAX_MESSAGE_BYTES
        utterance = payload.get("user_utterance") if isinstance(payload, dict) else None
        starts_turn = kind in ("message", "followup") or (
            kind == "start" and isinstance(utterance, str) and bool(utterance.strip())
        )
        if fits and starts_turn:
            self.turns.add(rid)
        return text, not (fits and kind in ("message", "followup", "pong"))

    def step(self, action: Action) -> None:
        message, must_answer = self._prepare(action)
        try:
            if message is None:
                time.sleep(action.pause_s)
            elif action.kind == "invalid_utf8":
                self.ws.send(message, text=True)
            else:
                self.ws.send(message)
            if message is not None:
                self.sent += 1
            answered = self._barrier()
        except ConnectionClosed as closed:
            self._closed(closed)
            return
        check_turn_invariants(self.frames, self.turns, ended=False)
        if must_answer:
            assert any(f["type"] in ANSWERS for f in answered), f"no answer to {action!r}: {answered}"

    def _closed(self, closed: ConnectionClosed) -> None:
        code = closed.rcvd.code if closed.rcvd is not None else None
        assert code in DOCUMENTED_CLOSES, f"closed with undocumented code {code} ({closed!r})"
        self.closes.append(code)
        # `end` (1000) cancels the running turn before it closes: then every turn has ended
        check_turn_invariants(self.frames, self.turns, ended=code == 1000)
        self.ws = self._connect()

    def finish(self) -> None:
        """Cancel whatever runs; then every turn of this connection must have ended exactly once."""
        try:
            self.ws.send("__CANCEL__")
            self._barrier()
        except ConnectionClosed as closed:
            self._closed(closed)
        check_turn_invariants(self.frames, self.turns)
        self.ws.close()


def control_turn(server: FuzzServer) -> None:
    """Another session, on its own connection, completes a whole turn."""
    with connect(f"{server.ws_url}/ws", additional_headers={"X-API-Key": KEY}, proxy=None) as ws:
        start = {"chat_prompt": "Be brief.", "user_utterance": "are you still there?"}
        ws.send(json.dumps({"type": "start", "session_id": "control", "request_id": "c1", "payload": start}))
        frames = []
        while not frames or frames[-1]["type"] not in TERMINAL:
            frames.append(json.loads(ws.recv(timeout=15)))
        assert frames[0]["type"] == "ack" and frames[-1]["type"] == "done", frames
        check_turn_invariants(frames, {"c1"})


def assert_nothing_left(server: FuzzServer) -> None:
    deadline = time.monotonic() + 5
    while server.engine.num_unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.engine.num_unfinished_requests() == 0
    while (active := server.status()["active_connections"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert active == 0


@pytest.fixture(scope="module")
def server() -> Iterator[FuzzServer]:
    with FuzzServer() as live:
        yield live


@pytest.mark.timeout(max(300, target_frames() // 4))  # `make fuzz` runs for minutes
def test_ws_protocol_fuzz(server: FuzzServer) -> None:
    target = target_frames()
    totals = {"frames": 0, "examples": 0}
    closes: dict[int, int] = {}

    @settings(
        max_examples=math.ceil(target / MIN_ACTIONS),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(st.lists(actions, min_size=MIN_ACTIONS, max_size=MAX_ACTIONS))
    def run(steps: list[Action]) -> None:
        client = WsFuzzClient(server)
        for action in steps:
            client.step(action)
            assert not server.errors(), "\n".join(server.errors())
        client.finish()
        control_turn(server)
        assert_nothing_left(server)
        assert not server.errors(), "\n".join(server.errors())
        totals["frames"] += client.sent
        totals["examples"] += 1
        for code in client.closes:
            closes[code] = closes.get(code, 0) + 1

    run()
    print(f"ws fuzz: {totals['frames']} frames in {totals['examples']} sequences; closes {closes}")
    assert totals["frames"] >= target * 0.9  # pauses are actions but not frames
