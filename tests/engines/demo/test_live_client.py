"""`yap client live` as a user runs it: a real process reading lines from its stdin, a real server socket."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from yap_cli.loopback import serve_on_loopback
from yap_engines import FakeEngine
from yap_server.app import create_app
from yap_server.settings import ServerSettings

from .support import KEY, RecordingEngine


async def live_process(port: int, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "yap_cli",
        "client",
        "live",
        "--server",
        f"http://127.0.0.1:{port}",
        "--key",
        KEY,
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def app_for(engine: RecordingEngine) -> Any:
    settings = ServerSettings(text_api_key=KEY, max_concurrent_connections=2, deploy_mode="chat")
    return create_app(settings, engines={"chat": engine})


async def test_typing_during_a_reply_barges_in_and_keeps_only_what_was_shown() -> None:
    engine = RecordingEngine(FakeEngine(text="word " * 30, tokens_per_s=20))
    async with serve_on_loopback(app_for(engine)) as port:
        process = await live_process(port, "--interrupt")
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(b"Tell me a story.\n")
        await process.stdin.drain()
        shown = b""
        while shown.count(b"word") < 3:  # the reply is streaming: the user starts talking over it
            shown += await asyncio.wait_for(process.stdout.read(256), 60)
        process.stdin.write(b"Stop, what time is it?\n")
        process.stdin.close()
        rest, errors = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, errors.decode()
    out = (shown + rest).decode()
    report = json.loads(out.strip().splitlines()[-1])
    first, second = report["turns"]
    assert first["outcome"] == "cancelled" and first["spoken_text"] == first["text"]
    assert first["text"].count("word") >= 3
    assert second["outcome"] == "done" and second["ttfb_ms"] > 0
    assert out.count("first token") == 2
    # the engine's prompt for the next turn holds only what was shown before the barge-in
    assert [dict(m) for m in engine.requests[-1].messages][-3:] == [
        {"role": "user", "content": "Tell me a story."},
        {"role": "assistant", "content": first["spoken_text"]},
        {"role": "user", "content": "Stop, what time is it?"},
    ]


async def test_piped_lines_each_wait_for_their_reply() -> None:
    engine = RecordingEngine(FakeEngine(text="Hello there, friend.", tokens_per_s=200))
    async with serve_on_loopback(app_for(engine)) as port:
        process = await live_process(port, "Hi!")
        out, errors = await asyncio.wait_for(process.communicate(b"How are you?\n\nBye.\n"), 60)
    assert process.returncode == 0, errors.decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert [t["utterance"] for t in report["turns"]] == ["Hi!", "How are you?", "Bye."]
    assert [t["outcome"] for t in report["turns"]] == ["done", "done", "done"]
    assert all(t["text"] == "Hello there, friend." and t["ttfb_ms"] > 0 for t in report["turns"])
    assert "assistant> Hello there, friend." in out.decode()
