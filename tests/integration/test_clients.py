"""Every `yap client` command as a user runs it (a real process) against one real `yap serve --engine fake`
(the demo tool classifier deployed beside it, `DEPLOY_MODE=both`), checking its exit status and output,
passing and failing runs."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from yap_cli.loopback import free_port

from .support import serve_env, wait_for_health, yap_serve

pytestmark = pytest.mark.integration

IDLE_S = 3  # the server's WS_IDLE_TIMEOUT_S: short for the idle test, longer than any other client's silence
# 80 words: 0.4 s at the shared server's 200 tokens/s, about 2 s at the cancel test's 50.
REPLY = " ".join(["Sure, here is a thought for you today, one that takes a little while to say out loud."] * 5)


@contextlib.contextmanager
def fake_server(log_dir: Path, demo_tool_dir: Path, **settings: str) -> Iterator[str]:
    """`yap serve --engine fake` on a free port (`settings` on top); yields its origin as `SERVER_WS_URL`
    would give it."""
    port = free_port()
    env = serve_env(
        port,
        YAP_ENGINES_DIR=str(demo_tool_dir.parent),
        MAX_CONCURRENT_CONNECTIONS="16",
        YAP_FAKE_TEXT=REPLY,
        WS_IDLE_TIMEOUT_S=str(IDLE_S),
        TOOL_DEVICE="cpu",
        **settings,
    )
    for name in ("DEPLOY_MODE", "TOOL_MODEL"):
        if name not in settings:
            env.pop(name, None)
    with (log_dir / "serve.log").open("w") as log:
        process = yap_serve(["--engine", "fake"], env, log)
        try:
            assert wait_for_health(process, port, timeout=180).status_code == 200
            yield f"ws://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_tool_dir: Path) -> Iterator[str]:
    """The demo tool classifier beside a fake chat engine at 200 tokens/s."""
    with fake_server(tmp_path_factory.mktemp("serve"), demo_tool_dir, YAP_FAKE_TOKENS_PER_S="200") as origin:
        yield origin


def client_env(server: str, **extra: str) -> dict[str, str]:
    """The environment of a client: the seed's variables, `extra` on top."""
    env = {k: v for k, v in os.environ.items() if k not in ("GENDER", "PERSONALITY", "PERSONA_STYLE")}
    return {**env, "SERVER_WS_URL": server, "TEXT_API_KEY": "k", "RECV_TIMEOUT_SEC": "30", **extra}


def yap_client(server: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`yap client ARGS` (server and key from the environment, as the seed's clients take them)."""
    command = [sys.executable, "-m", "yap_cli", "client", *args]
    return subprocess.run(command, env=client_env(server, **env), capture_output=True, text=True, timeout=120)


def start_client(server: str, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "yap_cli", "client", *args]
    return subprocess.Popen(command, env=client_env(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def report_of(out: str) -> dict[str, Any]:
    """The JSON report: the last line a client prints."""
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_warmup_prints_the_ack_then_metrics_and_final_text_lines(server: str) -> None:
    out = yap_client(server, "warmup", "--double-ttfb", "--gender", "woman", "--style", "flirty", "hello there")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("ACK ") and "gender=female" in lines[0] and "personality=flirty" in lines[0]
    assert "session_time=" in lines[0]
    metrics = [json.loads(line) for line in lines if '"type": "metrics"' in line]
    finals = [json.loads(line) for line in lines if '"type": "final_text"' in line]
    assert [m["run"] for m in metrics] == ["cold", "warm"] and len(finals) == 2
    for m, f in zip(metrics, finals, strict=True):
        assert set(m) >= {"ttfb_ms", "total_ms", "stream_ms", "chunks", "chars"}
        assert m["ttfb_ms"] > 0 and m["chunks"] > 0 and m["chars"] == len(f["text"]) > 0
    report = report_of(out.stdout)
    assert report["failures"] == [] and report["second_ttfb_ms"] > 0


def test_conversation_and_history_print_the_latency_summary(server: str) -> None:
    talk = yap_client(server, "conversation")
    assert talk.returncode == 0, talk.stderr
    assert "[ LATENCY SUMMARY ]" in talk.stdout and "FIRST  (includes prefill)  ttfb=" in talk.stdout
    for row in ("TTFB", "3-WORDS", "SENTENCE"):
        assert any(line.split()[:1] == [row] and "(n=9)" in line for line in talk.stdout.splitlines()), row
    assert report_of(talk.stdout)["outcomes"] == ["done"] * 10

    recall = yap_client(server, "history", "--temperature", "0.8", "--top_p", "0.9", GENDER="man")
    assert recall.returncode == 0, recall.stderr
    assert "Do you remember my name?" in recall.stdout and "p95=" in recall.stdout and REPLY in recall.stdout

    load = yap_client(server, "history", "--bench", "-n", "2", "-c", "2", "--timeout", "60")
    assert load.returncode == 0, load.stderr
    report = report_of(load.stdout)
    assert report["completed"] == 2 and report["turns"] == 12 and report["ttfb_ms"]["n"] == 12
    assert "ttfb_ms      p50" in load.stdout


def test_bench_double_ttfb_reports_cold_and_warm(server: str) -> None:
    out = yap_client(server, "bench", "-n", "4", "-c", "2", "--double-ttfb", "--personality", "savage", "who?")
    assert out.returncode == 0, out.stderr
    report = report_of(out.stdout)
    assert report["completed"] == 4 and report["failed"] == 0
    assert report["cold"]["ttfb_ms"]["n"] == 4 and report["warm"]["ttfb_ms"]["n"] == 4
    assert "[cold (1st transaction)]" in out.stdout and "[warm (2nd transaction)]" in out.stdout


def test_cancel_passes_and_fails_when_the_reply_ends_first(tmp_path: Path, demo_tool_dir: Path) -> None:
    # Its own server: chat only (no tool decision holding back the first token, which on a loaded machine
    # can outlast a short reply) and a reply of about 2 s, so the cancel lands mid-reply however slow the
    # client is to react, and a cancel sent 5 s after the first token still comes after the end.
    with fake_server(tmp_path, demo_tool_dir, YAP_FAKE_TOKENS_PER_S="50", DEPLOY_MODE="chat") as server:
        out = yap_client(server, "cancel", "--clients", "3", "--drain-timeout", "0.3")
        assert out.returncode == 0, out.stderr
        report = report_of(out.stdout)
        assert [c["outcome"] for c in report["clients"]] == ["cancelled"] * 3
        assert all(c["stray_frames"] == 0 and c["recovery"] == "done" for c in report["clients"])
        assert out.stdout.count("PASS") == 3

        late = yap_client(server, "cancel", "--cancel-delay", "5", "--drain-timeout", "0")
        assert late.returncode == 1 and "3 replies all ended done before the cancel was sent" in late.stderr


def test_idle_checks_the_normal_close_and_the_idle_close(server: str) -> None:
    # both at once: the failing run (wrong expectation) is told apart by when the close came
    good = start_client(server, "idle", "--normal-wait", "0.3", "--idle-expect-seconds", str(IDLE_S))
    wrong = start_client(server, "idle", "--normal-wait", "0", "--idle-expect-seconds", "10", "--idle-grace-seconds=2")
    out, errors = good.communicate(timeout=60)
    assert good.returncode == 0, errors
    report = report_of(out)
    assert report["normal"]["frames"] == ["session_end"] and report["normal"]["close_code"] == 1000
    assert (report["close_code"], report["close_reason"]) == (4000, "idle_timeout")
    assert IDLE_S - 1 < report["closed_after_s"] < IDLE_S + 2
    out, errors = wrong.communicate(timeout=60)
    assert wrong.returncode == 1 and "before the expected 10 s" in errors


def test_personality_switches_and_reports_the_prompt_update_limit(server: str) -> None:
    out = yap_client(server, "personality", "--switches", "3", "--delay", "0.1")
    assert out.returncode == 0, out.stderr
    assert [s["personality"] for s in report_of(out.stdout)["switches"]] == ["wholesome", "flirty", "savage", "calm"]
    # the server allows 4 chat_prompt changes a minute (CHAT_PROMPT_UPDATE_MAX_PER_WINDOW): the 5th is refused
    over = yap_client(server, "personality", "--switches", "5", "--delay", "0")
    assert over.returncode == 1
    assert "rate_limited" in over.stderr and "CHAT_PROMPT_UPDATE_MAX_PER_WINDOW" in over.stderr


def test_vision_wants_a_yes_before_the_first_token(server: str) -> None:
    out = yap_client(server, "vision")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("toolcall=yes") and "PASS" in out.stdout
    chat = yap_client(server, "vision", "tell me a joke")
    assert chat.returncode == 1 and "the tool decision was no" in chat.stderr


@pytest.mark.parametrize("name", ["screen-analysis", "screen_analysis"])
def test_screen_analysis_runs_the_followup(server: str, name: str) -> None:
    out = yap_client(server, name)
    assert out.returncode == 0, out.stderr
    report = report_of(out.stdout)
    assert report["decision"] == "yes" and report["followup"]["outcome"] == "done" and report["followup"]["text"]


def test_tool_replays_cases_and_fails_on_a_missing_decision(server: str) -> None:
    out = yap_client(server, "tool", "--limit", "4", "--max-steps", "1", "--concurrency", "2")
    assert out.returncode == 0, out.stderr
    report = report_of(out.stdout)
    assert report["cases"] == 4 and report["steps"] == 4 and "step accuracy" in out.stdout
    late = yap_client(server, "tool", "--limit", "1", "--timeout", "0.001")
    assert late.returncode == 1 and "no tool decision within 0.001 s" in late.stderr
    strict = yap_client(server, "tool", "--limit", "1", "--max-steps", "1", "--min-accuracy", "1.01")
    assert strict.returncode == 1 and "below --min-accuracy" in strict.stderr


def test_live_sends_interim_lines_as_prefill_and_shows_the_cached_share(server: str) -> None:
    command = [sys.executable, "-m", "yap_cli", "client", "live", "-p", "Be brief. " * 40]
    client = subprocess.Popen(
        command,
        env=client_env(server),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None
    # typed as a person speaks: each interim line a moment after the last (all at once, each newer prefill
    # would supersede the older one before it finished, and no warm would be acknowledged)
    for line in ("what is the...", "what is the weather in Bos...", "what is the weather in Austin"):
        time.sleep(1.0)
        client.stdin.write(line + "\n")
        client.stdin.flush()
    stdout, stderr = client.communicate(timeout=60)
    out = subprocess.CompletedProcess(command, client.returncode, stdout, stderr)
    assert out.returncode == 0, out.stderr
    assert "[warmed: " in out.stdout and "tokens cached]" in out.stdout
    assert "% of " in out.stdout and "prompt tokens" in out.stdout
    (turn,) = report_of(out.stdout)["turns"]  # interim lines are no turns
    assert turn["utterance"] == "what is the weather in Austin" and turn["outcome"] == "done"
    assert turn["cached_tokens"] > 0 and turn["prompt_tokens"] > turn["cached_tokens"]


def test_live_warm_with_an_opener_and_a_refused_connection(server: str) -> None:
    command = [sys.executable, "-m", "yap_cli", "client", "live", "--warm", "-p", "Be brief.", "Do you remember me?"]
    out = subprocess.run(command, env=client_env(server), input="", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [t["outcome"] for t in report_of(out.stdout)["turns"]] == ["done"]
    refused = yap_client(server, "warmup", "--api-key", "wrong")
    assert refused.returncode == 1 and "FAIL:" in refused.stderr


class TerminalClient:
    """`yap client ARGS` as a person runs it at a terminal: its stdin a pseudo-terminal the test types into,
    its stdout read as it comes (stderr piped)."""

    def __init__(self, server: str, *args: str) -> None:
        self.master, self.terminal = os.openpty()
        self.saved = termios.tcgetattr(self.terminal)
        command = [sys.executable, "-m", "yap_cli", "client", *args]
        self.process = subprocess.Popen(
            command, env=client_env(server), stdin=self.terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.shown = b""
        self.restored = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := self.process.stdout.read1(4096):
            self.shown += chunk

    def wait_until(self, ready: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.process.poll() is None, f"the client exited waiting for {what}: {self.process.stderr.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"no {what} within {timeout} s; shown: {self.shown!r}"
            time.sleep(0.05)

    def lflag(self) -> int:
        return int(termios.tcgetattr(self.terminal)[3])

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def finish(self) -> tuple[int, str, str]:
        """Wait for the client to exit: its status, what it showed, its stderr. Then `restored` says whether
        the terminal is in the mode it had before the client ran, and the pseudo-terminal is closed."""
        try:
            code = self.process.wait(timeout=60)
            self._reader.join(timeout=10)
            self.restored = termios.tcgetattr(self.terminal) == self.saved
            assert self.process.stderr is not None
            return code, self.shown.decode(), self.process.stderr.read().decode()
        finally:
            if self.process.poll() is None:
                self.process.kill()
            os.close(self.master)
            os.close(self.terminal)


def handled_prefills(server: str) -> float:
    """The `prefill` warms the server started or skipped (`yap_warms_total{kind="prefill"}`, events `started`
    and `skipped`: a prefill that adds no whole cache block is answered without reaching the engine)."""
    url = server.replace("ws://", "http://") + "/metrics"
    metrics = httpx.get(url, headers={"X-API-Key": "k"}, timeout=10).text
    pattern = r'^yap_warms_total\{event="(?:started|skipped)",kind="prefill"\} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, metrics, re.MULTILINE))


CBREAK_OFF = termios.ICANON | termios.ECHO | termios.ISIG  # what live's terminal mode turns off


def test_live_on_a_terminal_sends_prefills_as_the_user_types(server: str) -> None:
    before = handled_prefills(server)
    client = TerminalClient(server, "live", "-p", "Be brief. " * 40)
    client.wait_until(lambda: not client.lflag() & CBREAK_OFF, "cbreak mode")
    # a few keys at a time, as a person types: a pause after each (longer than the 0.25 s debounce), a
    # typo fixed with backspace on the way
    for keys in ("what", " is the", " weathx\x7fer", " in Aus", "tin"):
        time.sleep(0.8)
        client.type(keys)
    time.sleep(0.8)
    client.type("\r")  # Enter: the message
    client.wait_until(lambda: b"[done: " in client.shown, "reply")
    client.type("\x04")  # ctrl-d: the end
    code, shown, errors = client.finish()
    assert client.restored, "the terminal was left in cbreak mode"
    assert code == 0, errors
    assert "you> what is the weathx\b \ber in Austin\nassistant> " in shown  # the client echoes as it edits
    (turn,) = report_of(shown)["turns"]
    assert (turn["utterance"], turn["outcome"]) == ("what is the weather in Austin", "done")
    sent = [p["utterance"] for p in turn["prefills"]]
    assert len(sent) >= 2, sent
    for earlier, later in itertools.pairwise(sent):
        assert later.startswith(earlier) and len(later) > len(earlier), sent  # the utterances grow
    assert turn["utterance"].startswith(sent[-1]), sent
    # the server acknowledged them with the tokens it warmed, more as the utterance grew (one sent just
    # before Enter may be aborted by the message before it starts, unacknowledged)
    warmed = [p["prompt_tokens"] for p in turn["prefills"] if p["prompt_tokens"] is not None]
    assert warmed and warmed == sorted(warmed), turn["prefills"]
    assert len(warmed) <= handled_prefills(server) - before <= len(sent)  # each answered, none twice
    assert turn["cached_tokens"] > 0 and f"{len(sent)} prefills before it" in shown


def test_live_on_a_terminal_barges_in_on_enter_and_quits_on_ctrl_c(server: str) -> None:
    client = TerminalClient(server, "live", "-p", "Be brief.")
    client.wait_until(lambda: not client.lflag() & CBREAK_OFF, "cbreak mode")
    client.type("tell me a story\r")
    client.type("stop\r")  # Enter while the first reply runs: a barge-in
    client.wait_until(lambda: b"[done: " in client.shown, "the second reply")
    client.type("and another\r\x03")  # ctrl-c while that reply runs: cancel it and quit
    code, shown, errors = client.finish()
    assert client.restored, "the terminal was left in cbreak mode"
    assert code == 0, errors
    turns = report_of(shown)["turns"]
    assert [(t["utterance"], t["outcome"]) for t in turns] == [
        ("tell me a story", "cancelled"),
        ("stop", "done"),
        ("and another", "cancelled"),
    ]
    assert "spoken_text" in turns[0] and "[barge-in; " in shown and "^C" in shown


def test_live_on_a_terminal_killed_restores_the_terminal(server: str) -> None:
    client = TerminalClient(server, "live", "-p", "Be brief.")
    client.wait_until(lambda: not client.lflag() & CBREAK_OFF, "cbreak mode")
    client.type("half a li")
    client.wait_until(lambda: b"you> half a li" in client.shown, "the echo")
    client.process.terminate()  # SIGTERM: the session ends as with ctrl-c
    code, shown, errors = client.finish()
    assert client.restored, "the terminal was left in cbreak mode"
    assert code == 0, errors
    assert report_of(shown)["turns"] == [] and "you> half a li^C" in shown
