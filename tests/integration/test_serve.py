"""`yap serve` as a user runs it: a real process, a real port, vLLM's CPU build on the demo model."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from yap_cli.loopback import free_port

from .support import serve_env, wait_for_health, yap_serve

pytestmark = pytest.mark.integration


@pytest.fixture
def serve(tmp_path: Path, demo_model_dir: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    """Start `yap serve` with only its required settings, a port and the prebuilt demo model."""
    port = free_port()
    env = serve_env(
        port, YAP_ENGINES_DIR=str(demo_model_dir.parent), VLLM_CPU_KVCACHE_SPACE="1", MAX_CONCURRENT_CONNECTIONS="4"
    )
    log = (tmp_path / "serve.log").open("w")
    process = yap_serve([], env, log)
    try:
        yield process, port, tmp_path / "serve.log"
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_yap_serve_answers_healthz_on_the_embedded_default(
    serve: tuple[subprocess.Popen[str], int, Path],
) -> None:
    process, port, log = serve
    response = wait_for_health(process, port)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status reports it.
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    text = log.read_text()
    assert "Application shutdown complete" in text
    assert "serving the demo model" in text


def test_yap_serve_fake_and_yap_client_warmup(tmp_path: Path) -> None:
    """`yap serve --engine fake` configured from the environment, then `yap client warmup` as a user runs it."""
    port = free_port()
    env = serve_env(
        port, MAX_CONCURRENT_CONNECTIONS="2", YAP_FAKE_TEXT="Hello from the fake engine.", YAP_FAKE_TOKENS_PER_S="200"
    )
    with (tmp_path / "serve.log").open("w") as log:
        server = yap_serve(["--engine", "fake"], env, log)
        try:
            assert wait_for_health(server, port, timeout=180).status_code == 200
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "yap_cli",
                    "client",
                    "warmup",
                    "--server",
                    f"http://127.0.0.1:{port}",
                    "--key",
                    "k",
                    "--double-ttfb",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("Hello from the fake engine.") == 2
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["outcome"] == "done" and report["ttfb_ms"] > 0 and report["second_ttfb_ms"] > 0


def test_sigterm_ends_a_running_turn_cancelled_with_reason_shutdown(tmp_path: Path) -> None:
    """A real `yap serve` process told to stop mid-reply: the client gets `cancelled` (reason `shutdown`),
    then a 1012 close, and the process exits cleanly."""
    import websockets

    port = free_port()
    env = serve_env(
        port,
        MAX_CONCURRENT_CONNECTIONS="2",
        DEPLOY_MODE="chat",
        CHAT_MAX_OUT="500",
        YAP_FAKE_TEXT="word " * 400,
        YAP_FAKE_TOKENS_PER_S="20",
    )

    async def talk_through_a_shutdown(server: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], int | None]:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws?api_key=k") as ws:
            start = {"chat_prompt": "Be brief.", "user_utterance": "talk to me"}
            await ws.send(json.dumps({"type": "start", "session_id": "s", "request_id": "t1", "payload": start}))
            assert json.loads(await ws.recv())["type"] == "ack"
            assert json.loads(await ws.recv())["type"] == "token"
            server.send_signal(signal.SIGTERM)
            frames = []
            try:
                while True:
                    frames.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
            except websockets.ConnectionClosed as closed:
                return frames, closed.rcvd.code if closed.rcvd is not None else None

    with (tmp_path / "serve.log").open("w") as log:
        server = yap_serve(["--engine", "fake"], env, log)
        try:
            assert wait_for_health(server, port, timeout=180).status_code == 200
            frames, close_code = asyncio.run(talk_through_a_shutdown(server))
            assert server.wait(timeout=30) in (0, -signal.SIGTERM)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(timeout=30)
    assert frames[-1]["type"] == "cancelled" and frames[-1]["request_id"] == "t1"
    assert frames[-1]["payload"]["reason"] == "shutdown"
    assert close_code == 1012
