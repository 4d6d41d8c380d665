"""`yap client` flags and environment variables, as the seed's test clients read them."""

from __future__ import annotations

import argparse

import pytest

from yap_cli.client import client_parser, sampling_of, start_payload, ws_url
from yap_cli.client.core import TurnResult, turn_failure
from yap_cli.client.options import normalize_gender

SEED_ENV = ("SERVER_WS_URL", "TEXT_API_KEY", "GENDER", "PERSONALITY", "PERSONA_STYLE", "RECV_TIMEOUT_SEC")


@pytest.fixture(autouse=True)
def no_seed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SEED_ENV:
        monkeypatch.delenv(name, raising=False)


def parse(*argv: str) -> argparse.Namespace:
    """The namespace `yap client ARGV` runs with (the parser built now, so it reads the environment now)."""
    return client_parser().parse_args(["client", *argv])


def test_the_defaults_are_the_seeds() -> None:
    args = parse("warmup")
    assert ws_url(args.server, args.key) == "ws://127.0.0.1:8000/ws"
    assert (args.gender, args.personality, args.recv_timeout) == ("female", "wholesome", 60.0)
    assert args.message and not args.double_ttfb and not args.json
    assert start_payload(args) == {"gender": "female", "personality": "wholesome"}  # no sampling unless asked


def test_the_environment_sets_server_key_gender_personality_and_receive_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SERVER_WS_URL", "ws://10.0.0.5:9000")
    monkeypatch.setenv("TEXT_API_KEY", "secret")
    monkeypatch.setenv("GENDER", "Man")
    monkeypatch.setenv("PERSONA_STYLE", "savage")
    monkeypatch.setenv("RECV_TIMEOUT_SEC", "120")
    args = parse("conversation")
    assert ws_url(args.server, args.key) == "ws://10.0.0.5:9000/ws?api_key=secret"
    assert (args.gender, args.personality, args.recv_timeout) == ("male", "savage", 120.0)
    monkeypatch.setenv("PERSONALITY", "flirty")  # PERSONALITY wins over the seed 003 name
    assert parse("conversation").personality == "flirty"


def test_flags_win_over_the_environment_and_take_the_seeds_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENDER", "male")
    monkeypatch.setenv("TEXT_API_KEY", "env-key")
    args = parse("bench", "--url", "http://h:1", "--api-key", "k", "--gender", "woman", "--style", "calm", "hi")
    assert ws_url(args.server, args.key) == "ws://h:1/ws?api_key=k"
    assert (args.gender, args.personality, args.message) == ("female", "calm", "hi")
    assert parse("warmup", "--key", "k2", "--personality", "flirty").personality == "flirty"
    assert [normalize_gender(g) for g in ("woman", "MAN", "female", "other")] == ["female", "male", "female", "other"]


def test_sampling_flags_map_to_the_protocol_names() -> None:
    args = parse("history", "--temperature", "0.8", "--top_p", "0.9", "--top-k", "40", "--repeat-penalty", "1.05")
    assert sampling_of(args) == {"temperature": 0.8, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.05}
    assert start_payload(args, history=[])["sampling"] == sampling_of(args)
    assert sampling_of(parse("history", "--top-p", "0.5")) == {"top_p": 0.5}


def test_timeout_means_what_each_seed_client_meant() -> None:
    assert parse("live", "--timeout", "5").recv_timeout == 5.0  # live: the receive timeout
    assert parse("warmup", "--recv-timeout", "7").recv_timeout == 7.0
    tool = parse("tool")
    assert (tool.timeout, tool.recv_timeout, tool.max_steps, tool.min_accuracy) == (5.0, 60.0, 0, 0.0)
    bench = parse("bench", "--timeout", "180", "-n", "100", "-c", "20", "--double-ttfb")
    assert (bench.timeout, bench.sessions, bench.concurrency, bench.double_ttfb) == (180.0, 100, 20, True)
    history = parse("history", "--bench")
    assert (history.bench, history.sessions, history.concurrency) == (True, 8, 4)


def test_each_command_takes_its_seed_flags() -> None:
    cancel = parse("cancel", "--clients", "3", "--cancel-delay", "1.0", "--drain-timeout", "2.0")
    assert (cancel.clients, cancel.cancel_delay, cancel.drain_timeout) == (3, 1.0, 2.0)
    idle = parse("idle")
    assert (idle.normal_wait, idle.idle_expect_seconds, idle.idle_grace_seconds) == (3.0, 150.0, 15.0)
    switch = parse("personality", "--switches", "3", "--delay", "2")
    assert (switch.switches, switch.delay) == (3, 2.0)
    live = parse("live", "-p", "Be brief.", "--warm", "hello")
    assert (live.persona, live.warm, live.opener) == ("Be brief.", True, "hello")
    for name in ("screen-analysis", "screen_analysis"):
        assert parse(name).client_fn.__name__ == "screen_analysis"
    with pytest.raises(SystemExit):
        parse("vision", "--no-such-flag")


def test_turn_failure_names_how_a_turn_ended() -> None:
    assert turn_failure(TurnResult("r", outcome="done")) is None
    error = TurnResult("r", outcome="error", terminal={"code": "engine_error", "message": "boom"})
    assert turn_failure(error, "turn 2") == "turn 2 ended error (engine_error: boom)"
    assert (
        turn_failure(TurnResult("r", outcome="cancelled", terminal={"reason": "idle"})) == "turn ended cancelled (idle)"
    )
