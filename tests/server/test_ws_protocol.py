"""`/ws` to the letter of protocol.md, in-process (TestClient) on the fake engine.

Every test checks the turn invariants (one terminal frame per turn, nothing after it) and that the
engine has nothing left running.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from yap_engines import ChatRequest, FakeEngine, FunctionEngine
from yap_server.app import create_app

from .conftest import KEY, Probe, served, server_settings


@pytest.fixture
def slow() -> FakeEngine:
    """Streams long replies slowly enough for cancels and barge-ins to land mid-stream."""
    return FakeEngine(text="one two three four five six seven eight nine ten " * 5, tokens_per_s=50)


@pytest.fixture
def probe_for(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Open a probe on a served engine; on teardown check invariants and that nothing is left running."""
    opened: list[tuple[Probe, Any]] = []

    @contextlib.contextmanager
    def open_probe(engine: Any, path: str = f"/ws?api_key={KEY}", **settings: Any) -> Iterator[Probe]:
        with served(engine, **settings) as client, client.websocket_connect(path) as ws:
            probe = Probe(ws)
            opened.append((probe, engine))
            yield probe
            probe.check()

    yield open_probe
    for _, engine in opened:
        assert engine.num_unfinished_requests() == 0


# -- auth, capacity ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (f"/ws?api_key={KEY}", {}),
        ("/ws", {"X-API-Key": KEY}),
        ("/ws", {"Authorization": f"Bearer {KEY}"}),
    ],
)
def test_the_key_is_accepted_in_all_three_places(fake: FakeEngine, path: str, headers: dict[str, str]) -> None:
    with served(fake) as client, client.websocket_connect(path, headers=headers) as ws:
        ws.send_json({"type": "ping", "session_id": "s", "request_id": "p", "payload": {}})
        assert ws.receive_json()["type"] == "pong"


@pytest.mark.parametrize("path", ["/ws", "/ws?api_key=wrong"])
def test_a_missing_or_wrong_key_is_refused_with_1008(fake: FakeEngine, path: str) -> None:
    with served(fake) as client, client.websocket_connect(path) as ws:
        assert ws.receive_json()["payload"]["code"] == "authentication_failed"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008


def test_several_comma_separated_keys_are_accepted(fake: FakeEngine) -> None:
    with served(fake, text_api_key="first, second") as client:
        with client.websocket_connect("/ws?api_key=second") as ws:
            ws.send_json({"type": "ping", "session_id": "s", "request_id": "p", "payload": {}})
            assert ws.receive_json()["type"] == "pong"


def test_a_full_server_refuses_with_1013_and_the_slot_returns(fake: FakeEngine) -> None:
    with served(fake, max_concurrent_connections=1, ws_handshake_acquire_timeout_s=0.05) as client:
        with client.websocket_connect(f"/ws?api_key={KEY}") as first:
            first.send_json({"type": "ping", "session_id": "s", "request_id": "p", "payload": {}})
            first.receive_json()
            with client.websocket_connect(f"/ws?api_key={KEY}") as second:
                assert second.receive_json()["payload"]["code"] == "server_at_capacity"
                with pytest.raises(WebSocketDisconnect) as closed:
                    second.receive_json()
                assert closed.value.code == 1013
        with client.websocket_connect(f"/ws?api_key={KEY}") as third:
            third.send_json({"type": "ping", "session_id": "s", "request_id": "p", "payload": {}})
            assert third.receive_json()["type"] == "pong"
        assert client.get("/status", headers={"X-API-Key": KEY}).json()["active_connections"] == 0


# -- a normal conversation -----------------------------------------------------------------------


def test_start_acks_and_a_message_streams_tokens_then_done(probe_for: Any) -> None:
    engine = FakeEngine(text="Hello there, friend.")
    with probe_for(engine) as probe:
        ack = probe.start(personality="cheerful", gender="female")
        assert ack["payload"]["session_id"] == "s1"
        assert ack["payload"]["deploy_mode"] == "chat"
        assert (ack["payload"]["personality"], ack["payload"]["gender"]) == ("cheerful", "female")
        assert ack["payload"]["model"] == "fake" and ack["payload"]["server_time"] > 0
        assert ack["payload"]["for"] == "start"
        probe.send("message", {"user_utterance": "hi"}, "t1", turn=True)
        frames = probe.until_terminal("t1")
        tokens = [f["payload"]["text"] for f in frames if f["type"] == "token"]
        done = frames[-1]
        assert done["type"] == "done"
        assert done["session_id"] == "s1" and done["request_id"] == "t1"
        assert "".join(tokens) == done["payload"]["text"] == "Hello there, friend."
        assert done["payload"]["finish_reason"] == "stop"
        assert set(done["payload"]["usage"]) == {"prompt_tokens", "completion_tokens", "cached_tokens"}
        assert done["payload"]["usage"]["completion_tokens"] == 3  # "Hello", " there,", " friend."
        assert set(done["payload"]["timings"]) == {"tool_ms", "ttft_ms", "total_ms"}
        assert done["payload"]["timings"]["ttft_ms"] <= done["payload"]["timings"]["total_ms"]


@pytest.mark.parametrize(
    ("kind", "payload"), [("message", {"user_utterance": "hi"}), ("followup", {"analysis_text": "x"})]
)
def test_message_and_followup_are_acked_before_the_turns_first_frame(
    probe_for: Any, kind: str, payload: dict[str, Any]
) -> None:
    """The seed system's clients wait for `{"for": <type>, "ok": true}` after each message (raw frames, as sent)."""
    with probe_for(FakeEngine(text="Hello there.")) as probe:
        probe.start()
        probe.ws.send_json({"type": kind, "session_id": "s1", "request_id": "seed-1", "payload": payload})
        ack = probe.ws.receive_json()
        assert ack == {"type": "ack", "session_id": "s1", "request_id": "seed-1", "payload": {"for": kind, "ok": True}}
        assert probe.ws.receive_json()["type"] == "token"


def test_a_refused_message_gets_an_error_and_no_ack(probe_for: Any) -> None:
    with probe_for(FakeEngine()) as probe:
        probe.ws.send_json(
            {"type": "message", "session_id": "s1", "request_id": "m1", "payload": {"user_utterance": "hi"}}
        )
        assert probe.ws.receive_json()["payload"]["code"] == "session_not_started"
        probe.send("ping", {}, "p1")
        assert probe.ws.receive_json()["type"] == "pong"  # nothing else was sent for m1


def test_start_with_an_utterance_begins_a_turn(probe_for: Any) -> None:
    with probe_for(FakeEngine(text="Sure.")) as probe:
        probe.start(rid="t0", utterance="hello")
        assert probe.until_terminal("t0")[-1]["type"] == "done"


class PromptRecorder:
    """A FunctionEngine that records every prompt it is given (decoded with the real demo tokenizer)."""

    def __init__(self, tokenizer: Any, reply: str = "Okay then.") -> None:
        self.prompts: list[str] = []
        self.tokenizer = tokenizer

        async def pieces(request: ChatRequest) -> AsyncIterator[str]:
            self.prompts.append(tokenizer.decode(list(request.prompt_token_ids)))
            for word in reply.split(" "):
                yield word + " "

        self.engine = FunctionEngine(pieces, tokenizer=tokenizer)


def test_persona_history_and_followups_reach_the_prompt(probe_for: Any, demo_tokenizer: Any) -> None:
    recorder = PromptRecorder(demo_tokenizer)
    with probe_for(recorder.engine, screen_analysis_prefix="SCREEN: ") as probe:
        probe.start(
            personality="cheerful",
            gender="female",
            history=[
                {"role": "user", "content": "earlier question"},
                {"role": "assistant", "content": "earlier answer"},
            ],
        )
        probe.send("message", {"user_utterance": "what now"}, "t1", turn=True)
        probe.until_terminal("t1")
        probe.send("followup", {"analysis_text": "a code editor"}, "t2", turn=True)
        probe.until_terminal("t2")
    first, second = recorder.prompts
    assert "You are a brief voice assistant." in first
    assert "Your personality: cheerful." in first and "Your gender: female." in first
    assert first.index("earlier question") < first.index("earlier answer") < first.index("what now")
    assert first.endswith("<|im_start|>assistant\n")
    assert "user\nwhat now<|im_end|>\n<|im_start|>assistant\nOkay then." in second
    assert "user\nSCREEN: a code editor<|im_end|>" in second


def test_session_sampling_is_the_base_and_turn_sampling_overrides_it(probe_for: Any) -> None:
    seen: list[Any] = []

    async def pieces(request: ChatRequest) -> AsyncIterator[str]:
        seen.append(request.sampling)
        yield "ok"

    with probe_for(FunctionEngine(pieces)) as probe:
        probe.start(sampling={"temperature": 0.2, "top_k": 20, "max_tokens": 40})
        probe.send("message", {"user_utterance": "a"}, "t1", turn=True)
        probe.until_terminal("t1")
        probe.send("message", {"user_utterance": "b", "sampling": {"temperature": 1.5}}, "t2", turn=True)
        probe.until_terminal("t2")
    assert (seen[0].temperature, seen[0].top_k, seen[0].max_tokens) == (0.2, 20, 40)
    assert (seen[1].temperature, seen[1].top_k, seen[1].max_tokens) == (1.5, 20, 40)


def test_reasoning_is_hidden_by_default_and_streamed_on_request(probe_for: Any) -> None:
    async def pieces(request: ChatRequest) -> AsyncIterator[str]:
        for piece in ("<think>", "let me see", "</think>", "Sure", "."):
            yield piece

    with probe_for(FunctionEngine(pieces)) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "a"}, "t1", turn=True)
        hidden = probe.until_terminal("t1")
        assert {f["type"] for f in hidden[:-1]} == {"token"} and hidden[-1]["payload"]["text"] == "Sure."
        probe.send("message", {"user_utterance": "b", "sampling": {"reasoning": "stream"}}, "t2", turn=True)
        shown = probe.until_terminal("t2")
        assert "".join(f["payload"]["text"] for f in shown if f["type"] == "reasoning") == "let me see"
        assert shown[-1]["payload"]["text"] == "Sure."


def test_sanitize_output_false_streams_raw_deltas(probe_for: Any) -> None:
    with probe_for(FakeEngine(text="*waves* hi :)")) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "a"}, "t1", turn=True)
        clean = probe.until_terminal("t1")[-1]["payload"]["text"]
        probe.send("message", {"user_utterance": "b", "sampling": {"sanitize_output": False}}, "t2", turn=True)
        raw = probe.until_terminal("t2")[-1]["payload"]["text"]
    assert raw == "*waves* hi :)"
    assert clean == "Hi"


# -- cancel, barge-in, end -----------------------------------------------------------------------


def test_cancel_mid_stream_replies_cancelled_and_aborts_the_engine(probe_for: Any, slow: FakeEngine) -> None:
    with probe_for(slow) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "talk"}, "t1", turn=True)
        probe.expect("token")
        probe.send("cancel", {"reason": "user"}, "t1")
        frames = probe.until_terminal("t1")
        assert frames[-1]["type"] == "cancelled" and frames[-1]["payload"]["reason"] == "client_request"
        assert slow.num_unfinished_requests() == 0


def test_cancel_during_the_first_token_wait(probe_for: Any) -> None:
    engine = FakeEngine(text="late reply", first_token_delay_s=30)
    with probe_for(engine) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "talk"}, "t1", turn=True)
        probe.send("cancel", {}, "t1")
        assert [f["type"] for f in probe.until_terminal("t1")] == ["cancelled"]
        assert engine.num_unfinished_requests() == 0


def test_cancel_with_nothing_running_keeps_the_session_usable(probe_for: Any) -> None:
    with probe_for(FakeEngine(text="fine")) as probe:
        probe.send("cancel", {}, "c0")
        first = probe.expect("cancelled")
        assert first["payload"]["nothing_running"] is True and first["request_id"] == "c0"
        probe.start()
        probe.send("cancel", {}, "c1")
        assert probe.expect("cancelled")["payload"]["nothing_running"] is True
        probe.send("message", {"user_utterance": "still there?"}, "t1", turn=True)
        assert probe.until_terminal("t1")[-1]["type"] == "done"


def test_barge_in_cancels_the_running_turn_and_starts_the_new_one(probe_for: Any, slow: FakeEngine) -> None:
    with probe_for(slow) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "first"}, "t1", turn=True)
        probe.expect("token")
        probe.send("message", {"user_utterance": "second"}, "t2", turn=True)
        first = probe.until_terminal("t1")
        assert first[-1]["type"] == "cancelled" and first[-1]["payload"]["reason"] == "barge_in"
        probe.send("cancel", {}, "t2")
        probe.until_terminal("t2")


def test_a_new_start_during_a_turn_is_a_barge_in(probe_for: Any, slow: FakeEngine) -> None:
    with probe_for(slow) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "first"}, "t1", turn=True)
        probe.expect("token")
        probe.send("start", {"chat_prompt": "You are a brief voice assistant."}, "s2")
        frames = probe.until_terminal("t1")
        assert frames[-1]["payload"]["reason"] == "barge_in"
        probe.expect("ack")


def test_spoken_text_cuts_the_reply_kept_in_history(probe_for: Any, demo_tokenizer: Any) -> None:
    recorder = PromptRecorder(demo_tokenizer, reply="alpha beta gamma delta")
    with probe_for(recorder.engine) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "one"}, "t1", turn=True)
        probe.until_terminal("t1")
        # The reply finished, but the client had only spoken part of it when the user barged in.
        probe.send("cancel", {"spoken_text": "alpha beta"}, "c1")
        assert probe.expect("cancelled")["payload"]["nothing_running"] is True
        probe.send("message", {"user_utterance": "two"}, "t2", turn=True)
        probe.until_terminal("t2")
    assert "assistant\nalpha beta<|im_end|>" in recorder.prompts[1]
    assert "gamma" not in recorder.prompts[1]


def test_the_user_turn_enters_history_even_when_barged_in_early(probe_for: Any, demo_tokenizer: Any) -> None:
    prompts: list[str] = []

    async def reply() -> AsyncIterator[str]:
        yield "x"

    def pieces(request: ChatRequest) -> AsyncIterator[str]:
        prompts.append(demo_tokenizer.decode(list(request.prompt_token_ids)))  # at request time
        return reply()

    engine = FunctionEngine(pieces, tokenizer=demo_tokenizer, first_token_delay_s=30)
    with probe_for(engine) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "first words"}, "t1", turn=True)
        probe.send("message", {"user_utterance": "second words"}, "t2", turn=True)
        probe.until_terminal("t1")
        probe.send("cancel", {}, "t2")
        probe.until_terminal("t2")
    assert "first words" in prompts[-1] and "second words" in prompts[-1]


def test_end_replies_session_end_and_closes_1000(probe_for: Any, slow: FakeEngine) -> None:
    with probe_for(slow) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "talk"}, "t1", turn=True)
        probe.expect("token")
        probe.send("end", {}, "e1")
        frames = probe.until_terminal("t1")
        assert frames[-1]["type"] == "cancelled"
        assert probe.expect("session_end")["request_id"] == "e1"
        with pytest.raises(WebSocketDisconnect) as closed:
            probe.recv()
        assert closed.value.code == 1000


@pytest.mark.parametrize(("sentinel", "expected"), [("__CANCEL__", "cancelled"), ("__END__", "session_end")])
def test_raw_sentinels_act_as_cancel_and_end(probe_for: Any, slow: FakeEngine, sentinel: str, expected: str) -> None:
    with probe_for(slow) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "talk"}, "t1", turn=True)
        probe.expect("token")
        probe.ws.send_text(sentinel)
        frames = probe.until_terminal("t1")
        assert frames[-1]["type"] == "cancelled"
        if expected == "session_end":
            probe.expect("session_end")


def test_ping_answers_pong_and_pong_is_silent(probe_for: Any) -> None:
    with probe_for(FakeEngine()) as probe:
        probe.send("pong", {}, "p0")
        probe.send("ping", {}, "p1")
        pong = probe.expect("pong")
        assert (pong["session_id"], pong["request_id"]) == ("s1", "p1")


# -- errors keep the connection open -------------------------------------------------------------

BAD_FRAMES = [
    ("not json", "invalid_message"),
    ("[1, 2]", "invalid_message"),
    ('{"type": "ping"}', "invalid_message"),
    ('{"type": 5, "session_id": "s", "request_id": "r"}', "invalid_message"),
    ('{"type": "ping", "session_id": "s", "request_id": "r", "payload": []}', "invalid_message"),
    ('{"type": "dance", "session_id": "s", "request_id": "r", "payload": {}}', "unknown_type"),
    ('{"type": "message", "session_id": "s", "request_id": "r", "payload": {}}', "invalid_payload"),
    ('{"type": "start", "session_id": "s", "request_id": "r", "payload": {"chat_prompt": 7}}', "invalid_payload"),
    ('{"type": "start", "session_id": "s", "request_id": "r", "payload": {}}', "invalid_payload"),
    (
        '{"type": "followup", "session_id": "s", "request_id": "r", "payload": {"analysis_text": "x"}}',
        "session_not_started",
    ),
    (
        '{"type": "message", "session_id": "s", "request_id": "r", "payload": {"user_utterance": "x"}}',
        "session_not_started",
    ),
    ("[" * 100_000 + "]" * 100_000, "message_too_large"),
    (
        '{"type": "start", "session_id": "s", "request_id": "r", "payload": '
        '{"chat_prompt": "p", "sampling": {"top_p": 0}}}',
        "invalid_sampling",
    ),
]


@pytest.mark.parametrize(("text", "code"), BAD_FRAMES)
def test_bad_frames_get_a_coded_error_and_the_connection_stays_open(probe_for: Any, text: str, code: str) -> None:
    with probe_for(FakeEngine()) as probe:
        probe.ws.send_text(text)
        error = probe.expect("error")
        assert error["payload"]["code"] == code
        assert error["payload"]["message"]
        probe.send("ping", {}, "p")
        probe.expect("pong")


def test_deeply_nested_json_is_an_invalid_message(probe_for: Any) -> None:
    with probe_for(FakeEngine()) as probe:
        probe.ws.send_text("[" * 30_000 + "]" * 30_000)
        assert probe.expect("error")["payload"]["code"] == "invalid_message"


def test_binary_frames_are_an_invalid_message(probe_for: Any) -> None:
    with probe_for(FakeEngine()) as probe:
        probe.ws.send_bytes(b"\x00\x01")
        assert probe.expect("error")["payload"]["code"] == "invalid_message"
        probe.send("ping", {}, "p")
        probe.expect("pong")


@pytest.mark.parametrize(
    ("sampling", "key"),
    [
        ({"temperature": 3}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"max_tokens": 151}, "max_tokens"),
        ({"stop": "x"}, "stop"),
        ({"reasoning": "loud"}, "reasoning"),
        ({"sanitize_output": "no"}, "sanitize_output"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_invalid_sampling_names_the_key(probe_for: Any, sampling: dict[str, Any], key: str) -> None:
    with probe_for(FakeEngine()) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "a", "sampling": sampling}, "t1")
        error = probe.expect("error")
        assert error["payload"]["code"] == "invalid_sampling" and key in error["payload"]["message"]
        assert error["request_id"] == "t1"


def test_an_engine_failure_is_an_engine_error_and_the_session_goes_on(probe_for: Any) -> None:
    engine = FakeEngine(text="a b c d e f", fail_after=2)
    with probe_for(engine) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "a"}, "t1", turn=True)
        assert probe.until_terminal("t1")[-1]["payload"]["code"] == "engine_error"
        engine.fail_after = None
        probe.send("message", {"user_utterance": "b"}, "t2", turn=True)
        assert probe.until_terminal("t2")[-1]["type"] == "done"


def test_a_dead_engine_fails_healthz(fake: FakeEngine) -> None:
    with served(fake) as client:
        assert client.get("/healthz").status_code == 200
        fake.kill("gpu fell off the bus")
        response = client.get("/healthz")
        assert response.status_code == 503 and "gpu fell off" in json.dumps(response.json())


def test_a_bug_in_a_turn_is_an_internal_error_and_the_connection_stays(probe_for: Any) -> None:
    async def pieces(request: ChatRequest) -> AsyncIterator[str]:
        yield "fine "
        raise RuntimeError("boom")

    with probe_for(FunctionEngine(pieces)) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "a"}, "t1", turn=True)
        assert probe.until_terminal("t1")[-1]["payload"]["code"] == "internal_error"
        probe.send("ping", {}, "p")
        probe.expect("pong")


def test_a_persona_that_cannot_fit_is_context_too_long(probe_for: Any) -> None:
    with probe_for(FakeEngine(), chat_max_len=20) as probe:
        probe.start(chat_prompt="word " * 50)
        probe.send("message", {"user_utterance": "hi"}, "t1", turn=True)
        error = probe.until_terminal("t1")[-1]
        assert error["payload"]["code"] == "context_too_long"
        probe.send("ping", {}, "p")
        probe.expect("pong")


def test_parts_that_are_not_deployed_say_so() -> None:
    app = create_app(server_settings(deploy_mode="tool"), engines={"tool": FakeEngine()})
    with TestClient(app) as client, client.websocket_connect(f"/ws?api_key={KEY}") as ws:
        probe = Probe(ws)
        probe.send("start", {}, "s0")
        probe.expect("ack")
        probe.send("followup", {"analysis_text": "x"}, "f1")
        assert probe.expect("error")["payload"]["code"] == "not_deployed"


# -- limits --------------------------------------------------------------------------------------


def test_message_quota(probe_for: Any) -> None:
    with probe_for(FakeEngine(text="ok"), ws_max_messages_per_window=2, ws_message_window_seconds=60) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "a"}, "t1", turn=True)
        probe.until_terminal("t1")
        probe.send("message", {"user_utterance": "b"}, "t2")
        error = probe.expect("error")
        assert error["payload"]["code"] == "rate_limited" and error["payload"]["retry_after_s"] > 0
        probe.send("ping", {}, "p")  # pings are never metered
        probe.expect("pong")


def test_cancel_quota(probe_for: Any) -> None:
    with probe_for(FakeEngine(), ws_max_cancels_per_window=1, ws_cancel_window_seconds=60) as probe:
        probe.send("cancel", {}, "c1")
        probe.expect("cancelled")
        probe.send("cancel", {}, "c2")
        assert probe.expect("error")["payload"]["code"] == "rate_limited"


def test_chat_prompt_update_quota(probe_for: Any) -> None:
    with probe_for(FakeEngine(), chat_prompt_update_max_per_window=1) as probe:
        probe.start(chat_prompt="one")
        probe.start(chat_prompt="two")
        probe.start(chat_prompt="two")  # unchanged: not an update
        probe.send("start", {"chat_prompt": "three"}, "s3")
        assert probe.expect("error")["payload"]["code"] == "rate_limited"


def test_zero_disables_a_quota(probe_for: Any) -> None:
    with probe_for(FakeEngine(text="ok"), ws_max_messages_per_window=0) as probe:
        probe.start()
        for i in range(30):
            probe.send("message", {"user_utterance": "a"}, f"t{i}", turn=True)
            assert probe.until_terminal(f"t{i}")[-1]["type"] == "done"  # never rate_limited


def test_idle_connections_are_closed_4000_and_a_running_turn_is_cancelled(probe_for: Any) -> None:
    engine = FakeEngine(text="x", first_token_delay_s=30)
    with probe_for(engine, ws_idle_timeout_s=0.3) as probe:
        probe.start()
        probe.send("message", {"user_utterance": "a"}, "t1", turn=True)
        frames = probe.until_terminal("t1")
        assert frames[-1]["payload"]["reason"] == "idle"
        with pytest.raises(WebSocketDisconnect) as closed:
            probe.recv()
        assert (closed.value.code, closed.value.reason) == (4000, "idle_timeout")  # the seed system's reason


def test_disconnect_mid_stream_aborts_the_turn_and_frees_the_slot(slow: FakeEngine) -> None:
    with served(slow) as client:
        with client.websocket_connect(f"/ws?api_key={KEY}") as ws:
            probe = Probe(ws)
            probe.start()
            probe.send("message", {"user_utterance": "talk"}, "t1")
            probe.expect("token")
        deadline = time.monotonic() + 10
        status = client.get("/status", headers={"X-API-Key": KEY}).json()
        while (status["active_connections"] or slow.num_unfinished_requests()) and time.monotonic() < deadline:
            time.sleep(0.01)
            status = client.get("/status", headers={"X-API-Key": KEY}).json()
        assert status["active_connections"] == 0 and status["active_generations"] == 0
        assert slow.num_unfinished_requests() == 0


# -- HTTP ----------------------------------------------------------------------------------------


def test_status_needs_the_key_and_reports_capacity(fake: FakeEngine) -> None:
    with served(fake, max_concurrent_connections=3) as client:
        assert client.get("/status").status_code == 401
        body = client.get("/status", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert body["max_connections"] == 3 and body["active_connections"] == 0
        assert body["deploy_mode"] == "chat" and body["engines"] == {"chat": "fake"}


def test_the_app_refuses_to_start_without_a_tool_model_in_tool_modes(fake: FakeEngine) -> None:
    app = create_app(server_settings(deploy_mode="both"), engines={"chat": fake})
    with pytest.raises(RuntimeError, match="DEPLOY_MODE=both"), TestClient(app):
        pass
