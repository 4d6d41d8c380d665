"""`/ws` `prefill`: warms the next prompt while the user speaks (protocol.md), on the fake engine's prefix-cache model.

A warm streams nothing, never enters history and is no turn; a newer one supersedes (aborts) an older one;
`message`, disconnects and `end` abort it; it answers `ack` with `prompt_tokens`/`cached_tokens`; errors
leave the session usable. Every test checks that nothing is left running in the engine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from yap_engines import ChatRequest
from yap_server.ws.wire import PREFILL_MAX_CHARS

from .conftest import KEY, Probe, RecordingFake, app_for, served
from .test_streaming_core import StubClassifier

PERSONA = "You are a brief and friendly voice assistant who answers in one short sentence. " * 8
BLOCK = 16


def engine(**options: Any) -> RecordingFake:
    return RecordingFake(text="Sure, here you go.", cache_block_size=BLOCK, **options)


def frame_types(probe: Probe) -> list[str]:
    return [f["type"] for f in probe.frames]


def wait_until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def acks(probe: Probe) -> list[str]:
    """What the `ack` frames answered, but for `message` (the Probe checks those)."""
    return [f["payload"]["for"] for f in probe.frames if f["type"] == "ack" and f["payload"]["for"] != "message"]


def ping(probe: Probe, rid: str = "p") -> None:
    """Round-trip a ping: every frame the server sent before it has arrived."""
    probe.send("ping", rid=rid)
    while probe.recv()["type"] != "pong":
        pass


@pytest.fixture
def open_probe() -> Iterator[Any]:
    opened: list[tuple[TestClient, Any, RecordingFake]] = []

    def open_(fake: RecordingFake, **settings: Any) -> Probe:
        context = served(fake, **settings)
        client = context.__enter__()
        ws_context = client.websocket_connect(f"/ws?api_key={KEY}")
        ws = ws_context.__enter__()
        opened.append((context, ws_context, fake))
        return Probe(ws)

    yield open_
    for context, ws_context, fake in reversed(opened):
        ws_context.__exit__(None, None, None)
        context.__exit__(None, None, None)
        assert fake.num_unfinished_requests() == 0


def test_a_prefill_acks_the_cache_and_the_message_hits_it(open_probe: Any) -> None:
    fake = engine()
    probe = open_probe(fake, ws_warm_after_start=False, ws_warm_after_turn=True)
    probe.start(chat_prompt=PERSONA)
    probe.send("prefill", {"user_utterance": "what is the weather like in Bos"}, rid="w1")
    ack = probe.expect("ack")
    assert ack["request_id"] == "w1"
    payload = ack["payload"]
    assert payload["for"] == "prefill"
    assert payload["prompt_tokens"] > 4 * BLOCK
    assert payload["cached_tokens"] == payload["prompt_tokens"] - payload["prompt_tokens"] % BLOCK
    probe.send("message", {"user_utterance": "what is the weather like in Austin"}, rid="m1", turn=True)
    done = probe.until_terminal("m1")[-1]
    assert done["type"] == "done"
    usage = done["payload"]["usage"]
    assert usage["cached_tokens"] >= payload["cached_tokens"]
    assert usage["cached_tokens"] >= usage["prompt_tokens"] - BLOCK - 8  # "Austin" and the turn's end changed
    # never a token frame, never history, never a turn
    assert [f["request_id"] for f in probe.frames if f["type"] == "token"] == ["m1"] * frame_types(probe).count("token")
    turn_prompt = fake.requests[-1].messages
    assert [m["role"] for m in turn_prompt] == ["system", "user"]
    assert turn_prompt[-1]["content"] == "what is the weather like in Austin"


def recording_prefills(fake: RecordingFake) -> list[ChatRequest]:
    """The warms that reached the engine."""
    warmed: list[ChatRequest] = []
    prefill = fake.prefill

    async def recording(request: ChatRequest) -> Any:
        warmed.append(request)
        return await prefill(request)

    fake.prefill = recording  # type: ignore[method-assign]
    return warmed


def test_the_warm_is_a_token_prefix_of_the_final_prompt(open_probe: Any) -> None:
    fake = engine()
    warmed = recording_prefills(fake)
    probe = open_probe(fake, ws_warm_after_start=False, ws_warm_after_turn=False)
    probe.start(
        chat_prompt=PERSONA, history=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hey!"}]
    )
    probe.send("prefill", {"user_utterance": "book a table for two at eight"}, rid="w1")
    probe.expect("ack")
    probe.send("message", {"user_utterance": "book a table for two at eight thirty"}, rid="m1", turn=True)
    probe.until_terminal("m1")
    final = list(fake.requests[-1].prompt_token_ids)
    warm = list(warmed[-1].prompt_token_ids)
    assert len(warm) < len(final) and final[: len(warm)] == warm
    assert len(warm) > len(final) - 10  # only the moving word, the end of turn and the generation prompt left out


def test_a_newer_prefill_supersedes_and_aborts_the_older_one(open_probe: Any) -> None:
    fake = engine(prefill_delay_s=0.3)
    probe = open_probe(fake, ws_warm_after_start=False, ws_warm_after_turn=True)
    probe.start(chat_prompt=PERSONA)
    probe.send("prefill", {"user_utterance": "what is"}, rid="w1")
    # w2 adds whole cache blocks: w1 cannot answer for it, so it is aborted and w2 computed
    longer = "what is the weather going to be like tomorrow morning in Austin and then in Boston at noon"
    probe.send("prefill", {"user_utterance": longer}, rid="w2")
    ack = probe.expect("ack")
    assert ack["request_id"] == "w2"
    ping(probe)
    assert [f["request_id"] for f in probe.frames if f["type"] == "ack"] == ["start", "w2"]
    assert (fake.prefills_started, fake.prefills_completed) == (2, 1)
    assert fake.num_unfinished_requests() == 0


def test_a_message_aborts_a_running_warm_and_streams_as_usual(open_probe: Any) -> None:
    fake = engine(prefill_delay_s=5.0)
    probe = open_probe(fake, ws_warm_after_start=False, ws_warm_after_turn=False)
    probe.start(chat_prompt=PERSONA)
    probe.send("prefill", {"user_utterance": "tell me a"}, rid="w1")
    wait_until(lambda: fake.prefills_started == 1)
    probe.send("message", {"user_utterance": "tell me a joke"}, rid="m1", turn=True)
    frames = probe.until_terminal("m1")
    assert frames[-1]["type"] == "done" and frames[-1]["payload"]["text"] == "Sure, here you go."
    assert fake.prefills_completed == 0 and fake.num_unfinished_requests() == 0
    assert "w1" not in [f["request_id"] for f in probe.frames]


def test_a_disconnect_during_a_warm_leaves_nothing_running_and_frees_the_slot() -> None:
    fake = engine(prefill_delay_s=30.0)
    with served(fake, ws_warm_after_start=False) as client:
        with client.websocket_connect(f"/ws?api_key={KEY}") as ws:
            probe = Probe(ws)
            probe.start(chat_prompt=PERSONA)
            probe.send("prefill", {"user_utterance": "what is the"}, rid="w1")
            wait_until(lambda: fake.num_unfinished_requests() == 1)
        wait_until(lambda: fake.num_unfinished_requests() == 0)
        status = client.get("/status", headers={"X-API-Key": KEY}).json()
        wait_until(lambda: client.get("/status", headers={"X-API-Key": KEY}).json()["active_connections"] == 0)
        assert status["active_generations"] == 0
        cancelled = 'yap_warms_total{event="cancelled",kind="prefill"} 1.0'
        wait_until(lambda: cancelled in client.get("/metrics", headers={"X-API-Key": KEY}).text)
    assert fake.prefills_completed == 0


def test_a_prefill_during_a_reply_does_not_touch_the_reply(open_probe: Any) -> None:
    fake = RecordingFake(text="one two three four five six seven eight nine ten " * 3, tokens_per_s=100)
    probe = open_probe(fake, ws_warm_after_turn=False)
    probe.start(chat_prompt=PERSONA)
    probe.send("message", {"user_utterance": "count to thirty"}, rid="m1", turn=True)
    probe.expect("token")
    probe.send("prefill", {"user_utterance": "okay that is"}, rid="w1")
    frames = probe.until_terminal("m1")
    ping(probe)
    assert frames[-1]["type"] == "done"
    assert "".join(f["payload"]["text"] for f in probe.frames if f["type"] == "token") == frames[-1]["payload"]["text"]
    assert len(frames[-1]["payload"]["text"].split()) == 30
    assert acks(probe) == ["start", "prefill"]


# -- errors: each has its code and the session stays usable ----------------------------------------


def test_prefill_before_start_is_session_not_started(open_probe: Any) -> None:
    fake = engine()
    probe = open_probe(fake)
    probe.send("prefill", {"user_utterance": "hello"}, rid="w1")
    error = probe.expect("error")
    assert error["payload"]["code"] == "session_not_started" and "prefill" in error["payload"]["message"]
    probe.start(chat_prompt=PERSONA)
    probe.send("message", {"user_utterance": "hello"}, rid="m1", turn=True)
    assert probe.until_terminal("m1")[-1]["type"] == "done"


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        ({"user_utterance": 42}, "payload.user_utterance"),
        ({"user_utterance": ["a"]}, "payload.user_utterance"),
        ({}, "payload.user_utterance"),
        ({"user_utterance": "x" * (PREFILL_MAX_CHARS + 1)}, str(PREFILL_MAX_CHARS)),
    ],
)
def test_a_bad_user_utterance_is_invalid_payload(open_probe: Any, payload: dict[str, Any], names: str) -> None:
    fake = engine()
    probe = open_probe(fake, ws_max_message_bytes=2 * PREFILL_MAX_CHARS)
    probe.start(chat_prompt=PERSONA)
    probe.send("prefill", payload, rid="w1")
    error = probe.expect("error")
    assert error["payload"]["code"] == "invalid_payload" and names in error["payload"]["message"]
    probe.send("prefill", {"user_utterance": "still works"}, rid="w2")
    assert probe.expect("ack")["request_id"] == "w2"


def test_prefills_have_their_own_quota(open_probe: Any) -> None:
    fake = engine()
    probe = open_probe(fake, ws_max_prefills_per_window=2, ws_prefill_window_seconds=60, ws_max_messages_per_window=2)
    probe.start(chat_prompt=PERSONA)  # one of the two messages
    for rid in ("w1", "w2"):
        probe.send("prefill", {"user_utterance": "what is the time"}, rid=rid)
        probe.expect("ack")
    probe.send("prefill", {"user_utterance": "what is the time"}, rid="w3")
    error = probe.expect("error")
    assert error["payload"]["code"] == "rate_limited" and error["payload"]["retry_after_s"] > 0
    probe.send("message", {"user_utterance": "what is the time"}, rid="m1", turn=True)  # the message quota is apart
    assert probe.until_terminal("m1")[-1]["type"] == "done"


def test_prefill_without_chat_is_not_deployed() -> None:
    app = app_for({"tool": StubClassifier()}, deploy_mode="tool")
    with TestClient(app) as client, client.websocket_connect(f"/ws?api_key={KEY}") as ws:
        probe = Probe(ws)
        probe.start(chat_prompt="")
        probe.send("prefill", {"user_utterance": "look at my"}, rid="w1")
        error = probe.expect("error")
        assert error["payload"]["code"] == "not_deployed" and "DEPLOY_MODE=tool" in error["payload"]["message"]
        probe.send("message", {"user_utterance": "look at my screen"}, rid="m1", turn=True)
        assert probe.until_terminal("m1")[-1]["type"] == "done"


# -- automatic warms -----------------------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_start_warms_persona_and_history_unless_switched_off(open_probe: Any, enabled: bool) -> None:
    fake = engine()
    probe = open_probe(fake, ws_warm_after_start=enabled, ws_warm_after_turn=False)
    probe.start(chat_prompt=PERSONA)
    ping(probe)
    wait_until(lambda: fake.prefills_completed == (1 if enabled else 0))
    probe.send("message", {"user_utterance": "hello there"}, rid="m1", turn=True)
    usage = probe.until_terminal("m1")[-1]["payload"]["usage"]
    assert (usage["cached_tokens"] > 4 * BLOCK) is enabled
    assert acks(probe) == ["start"]  # automatic warms answer nothing


@pytest.mark.parametrize("enabled", [True, False])
def test_each_turn_warms_its_history_for_the_next_unless_switched_off(open_probe: Any, enabled: bool) -> None:
    fake = RecordingFake(text="a reply of forty words " * 10, cache_block_size=BLOCK)
    probe = open_probe(fake, ws_warm_after_start=False, ws_warm_after_turn=enabled)
    probe.start(chat_prompt=PERSONA)
    probe.send("message", {"user_utterance": "hello there"}, rid="m1", turn=True)
    probe.until_terminal("m1")
    wait_until(lambda: fake.prefills_completed == (1 if enabled else 0))
    probe.send("message", {"user_utterance": "and again"}, rid="m2", turn=True)
    usage = probe.until_terminal("m2")[-1]["payload"]["usage"]
    # the first prompt was cached by its own turn; the reply after it only by the warm after the turn
    assert (usage["cached_tokens"] > len(fake.requests[0].prompt_token_ids)) is enabled


def test_after_a_barge_in_the_warm_holds_the_spoken_part(open_probe: Any) -> None:
    fake = RecordingFake(text="one two three four five six seven eight nine ten " * 5, tokens_per_s=50)
    warmed = recording_prefills(fake)
    probe = open_probe(fake, ws_warm_after_start=False, ws_warm_after_turn=True)
    probe.start(chat_prompt=PERSONA)
    probe.send("message", {"user_utterance": "count"}, rid="m1", turn=True)
    probe.expect("token")
    spoken = "one two three four five six seven eight nine ten eleven twelve"  # adds a whole cache block
    probe.send("cancel", {"spoken_text": spoken}, rid="m1")
    probe.until_terminal("m1")
    wait_until(lambda: fake.prefills_completed == 1)
    assert warmed[-1].messages[-2] == {"role": "assistant", "content": spoken}


# -- skipped warms: only a warm that adds a whole cache block reaches the engine ---------------------


def test_a_prefill_that_adds_no_whole_block_never_reaches_the_engine() -> None:
    fake = engine()
    warmed = recording_prefills(fake)
    words = "could you please tell me what the weather will be like in Austin tomorrow morning".split()
    with served(fake, ws_warm_after_start=True, ws_warm_after_turn=False) as client:
        with client.websocket_connect(f"/ws?api_key={KEY}") as ws:
            probe = Probe(ws)
            probe.start(chat_prompt=PERSONA)
            wait_until(lambda: fake.prefills_completed == 1)  # the persona, warmed after start
            answers = []
            for n in range(1, len(words) + 1):  # an interim transcript a word longer each time
                probe.send("prefill", {"user_utterance": " ".join(words[:n])}, rid=f"w{n}")
                answers.append(probe.expect("ack")["payload"])
            probe.send("message", {"user_utterance": " ".join(words) + "?"}, rid="m1", turn=True)
            usage = probe.until_terminal("m1")[-1]["payload"]["usage"]
        metrics = client.get("/metrics", headers={"X-API-Key": KEY}).text
    # every prefill is answered with what is cached: its whole blocks
    assert [a["cached_tokens"] for a in answers] == [a["prompt_tokens"] - a["prompt_tokens"] % BLOCK for a in answers]
    # the engine saw the start's warm, then one warm per new whole block, each beyond the one before
    blocks = [len(w.prompt_token_ids) // BLOCK for w in warmed]
    assert blocks == sorted(set(blocks)) and len(warmed) == 1 + len(
        {a["cached_tokens"] for a in answers} - {blocks[0] * BLOCK}
    )
    skipped = len(words) - (len(warmed) - 1)
    assert skipped > len(words) // 2  # most words add no whole block of 16 tokens
    assert f'yap_warms_total{{event="skipped",kind="prefill"}} {float(skipped)}' in metrics
    assert usage["cached_tokens"] >= answers[-1]["cached_tokens"]  # the final message still finds them
    assert fake.num_unfinished_requests() == 0


def test_a_running_warm_answers_for_a_newer_prefill_it_covers(open_probe: Any) -> None:
    fake = engine(prefill_delay_s=2.0)  # long enough that w2 surely arrives while w1 runs
    probe = open_probe(fake, ws_warm_after_start=False, ws_warm_after_turn=False)
    probe.start(chat_prompt=PERSONA)
    # only the still-moving last word differs: the same stable text, the same warm
    probe.send("prefill", {"user_utterance": "what is the wea"}, rid="w1")
    probe.send("prefill", {"user_utterance": "what is the weat"}, rid="w2")
    ack = probe.expect("ack")
    ping(probe)
    assert ack["request_id"] == "w2" and acks(probe) == ["start", "prefill"]
    payload = ack["payload"]
    assert payload["cached_tokens"] == payload["prompt_tokens"] - payload["prompt_tokens"] % BLOCK > 0
    assert (fake.prefills_started, fake.prefills_completed) == (1, 1)  # not aborted and started again


def test_a_prefill_the_running_turn_already_computed_is_skipped(open_probe: Any) -> None:
    fake = RecordingFake(text="one two three four five six seven eight nine ten " * 3, tokens_per_s=100)
    probe = open_probe(fake, ws_warm_after_start=False, ws_warm_after_turn=False)
    probe.start(chat_prompt=PERSONA)
    probe.send("message", {"user_utterance": "count to thirty"}, rid="m1", turn=True)
    probe.expect("token")  # the turn's prompt is computed
    probe.send("prefill", {"user_utterance": "okay that is"}, rid="w1")  # during a reply: persona and history
    probe.until_terminal("m1")
    ping(probe)
    ack = next(f for f in probe.frames if f["type"] == "ack" and f["request_id"] == "w1")
    assert ack["payload"]["cached_tokens"] > 4 * BLOCK
    assert fake.prefills_started == 0
