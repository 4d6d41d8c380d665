"""Fault injection over a real socket: engines that fail or die, a failing tool classifier, a client
that never reads. Each test asserts the client gets a documented answer, nothing hangs, and the
engine has nothing left running."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from yap_engines import ChatRequest, FakeEngine, FunctionEngine
from yap_engines.tool import ToolClassifier, ToolSettings

from .conftest import KEY, TERMINAL, ack_for, check_turn_invariants, live_server


class Recorder:
    """A `/ws` client over a real socket that records frames and checks the turn invariants."""

    def __init__(self, connection: Any, session_id: str = "s1") -> None:
        self.connection = connection
        self.session_id = session_id
        self.frames: list[dict[str, Any]] = []
        self.turns: set[str] = set()

    async def send(self, kind: str, rid: str, **payload: Any) -> None:
        if kind == "message":
            self.turns.add(rid)
        frame = {"type": kind, "session_id": self.session_id, "request_id": rid, "payload": payload}
        await self.connection.send(json.dumps(frame))

    async def recv(self, wait_s: float = 20) -> dict[str, Any]:
        frame = dict(json.loads(await asyncio.wait_for(self.connection.recv(), wait_s)))
        self.frames.append(frame)
        return frame

    async def start(self) -> None:
        await self.send("start", "start", chat_prompt="Be brief.")
        assert (await self.recv())["type"] == "ack"

    async def turn(self, rid: str, utterance: str = "hello", wait_s: float = 20) -> list[dict[str, Any]]:
        """Send a message and read up to its terminal frame; the frames after its `ack`, which must come first."""
        await self.send("message", rid, user_utterance=utterance)
        got = []
        while True:
            frame = await self.recv(wait_s)
            if frame["request_id"] == rid:
                got.append(frame)
                if frame["type"] in TERMINAL:
                    check_turn_invariants(self.frames, self.turns)
                    assert got[0] == ack_for(self.session_id, rid, "message") or got[0]["type"] == "error", got
                    return got[1:] if got[0]["type"] == "ack" else got


def http_origin(ws_origin: str) -> str:
    return ws_origin.replace("ws://", "http://", 1)


async def healthz(origin: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=http_origin(origin), timeout=10) as client:
        return await client.get("/healthz")


@contextlib.contextmanager
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """ERROR records of the server's loggers (uvicorn, yap, asyncio). Enter it once the server runs:
    uvicorn's logging setup drops handlers added before it."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                records.append(record)

    handler = Collect()
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "yap", "asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    yield records
    for logger in loggers:
        logger.removeHandler(handler)


# -- engine failures ---------------------------------------------------------------------------


async def test_an_engine_failing_mid_stream_gives_engine_error_and_the_session_recovers() -> None:
    engine = FakeEngine(text="one two three four five six seven eight", tokens_per_s=200, fail_after=3)
    async with live_server(engine, stream_flush_ms=0) as origin:  # a frame per engine delta: three tokens
        with server_errors() as errors:
            async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:
                client = Recorder(ws)
                await client.start()
                failed = await client.turn("t1")
                # every token the engine produced before failing reaches the client, then one error (how many
                # frames carry them depends on how the reader kept up: a late one gets them in one delta)
                assert {f["type"] for f in failed[:-1]} == {"token"} and failed[-1]["type"] == "error"
                assert "".join(f["payload"]["text"] for f in failed[:-1]) == "One two three"  # sanitized: capitalised
                assert failed[-1]["payload"]["code"] == "engine_error"
                assert "after 3 tokens" in failed[-1]["payload"]["message"]
                assert (await healthz(origin)).status_code == 200  # a per-request failure: the engine lives
                engine.fail_after = None
                assert (await client.turn("t2"))[-1]["type"] == "done"
    assert engine.num_unfinished_requests() == 0
    assert not errors


async def test_a_dead_engine_fails_health_and_every_turn_answers_at_once() -> None:
    engine = FakeEngine(text="word " * 400, tokens_per_s=100)
    async with live_server(engine) as origin:
        async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:
            client = Recorder(ws)
            await client.start()
            await client.send("message", "t1", user_utterance="hello")
            assert await client.recv() == ack_for("s1", "t1", "message")
            assert (await client.recv())["type"] == "token"
            engine.kill("injected fault")
            while (frame := await client.recv())["request_id"] != "t1" or frame["type"] not in TERMINAL:
                pass
            assert frame["type"] == "error" and frame["payload"]["code"] == "engine_error"
            health = await healthz(origin)
            assert health.status_code == 503
            assert "injected fault" in health.json()["failing"]["chat"]
            started = time.perf_counter()
            frames = await client.turn("t2", wait_s=5)
            assert frames[-1]["payload"]["code"] == "engine_error" and time.perf_counter() - started < 2
            await client.send("ping", "p")
            assert (await client.recv())["type"] == "pong"  # the connection stays open (protocol: engine_error)
    assert engine.num_unfinished_requests() == 0


@pytest.fixture
async def own_vllm_engine(demo_model_dir: Path) -> AsyncIterator[Any]:
    """A vLLM engine of its own (it gets killed), not the shared session engine."""
    pytest.importorskip("vllm", reason="vLLM is not installed (make install)")
    psutil = pytest.importorskip("psutil")
    from yap_engines import load_engine

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    engine = load_engine("vllm", model=str(demo_model_dir), vllm_max_num_seqs=2)
    engine.spawned_pids = [p.pid for p in psutil.Process().children(recursive=True) if p.pid not in before]
    try:
        yield engine
    finally:
        await asyncio.wait_for(engine.aclose(), 30)


@pytest.mark.vllm
async def test_a_vllm_engine_core_killed_by_pid_gives_engine_error_and_503(own_vllm_engine: Any) -> None:
    import psutil

    engine = own_vllm_engine
    cores = [pid for pid in engine.spawned_pids if "EngineCore" in " ".join(psutil.Process(pid).cmdline())]
    cores = cores or [pid for pid in engine.spawned_pids if psutil.Process(pid).name().startswith(("VLLM", "python"))]
    assert cores, f"no engine-core child among {engine.spawned_pids}"
    async with live_server(engine, chat_max_out=2000) as origin:
        async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:
            client = Recorder(ws)
            await client.start()
            assert (await client.turn("warm", wait_s=60))[-1]["type"] == "done"
            await client.send("message", "t1", user_utterance="tell me everything", sampling={"max_tokens": 2000})
            assert await client.recv(60) == ack_for("s1", "t1", "message")
            assert (await client.recv(60))["type"] in ("token", "done")
            for pid in cores:
                os.kill(pid, signal.SIGKILL)
            frame = client.frames[-1]
            while frame["request_id"] != "t1" or frame["type"] not in TERMINAL:
                frame = await client.recv(30)
            # the stream may have finished just before the kill; the next turn must fail then
            if frame["type"] == "done":
                frame = (await client.turn("t2", wait_s=30))[-1]
            assert frame["type"] == "error" and frame["payload"]["code"] == "engine_error", frame
            health = await healthz(origin)
            assert health.status_code == 503 and "chat" in health.json()["failing"]
            assert (await client.turn("t3", wait_s=10))[-1]["payload"]["code"] == "engine_error"


# -- the tool classifier -----------------------------------------------------------------------


def _slow_infer(batch: list[list[int]]) -> list[tuple[float, str]]:
    time.sleep(0.5)
    return [(1.0, "take_screenshot")] * len(batch)


def _broken_infer(batch: list[list[int]]) -> list[tuple[float, str]]:
    raise RuntimeError("classifier crashed")


@pytest.mark.parametrize(("infer", "label"), [(_slow_infer, "timeout"), (_broken_infer, "error")])
async def test_a_tool_classifier_that_times_out_or_raises_answers_no_and_chat_still_streams(
    demo_tool_dir: Path, infer: Any, label: str
) -> None:
    tool = ToolClassifier.load(str(demo_tool_dir), ToolSettings(tool_device="cpu", tool_timeout_s=0.1))
    tool._infer = infer  # type: ignore[method-assign]  # the injected fault
    chat = FakeEngine(text="Sure, here you go.", tokens_per_s=200)
    try:
        async with live_server(chat, engines={"chat": chat, "tool": tool}, deploy_mode="both") as origin:
            async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:
                client = Recorder(ws)
                await client.start()
                for rid in ("t1", "t2"):
                    frames = await client.turn(rid, "can you look at my screen?")
                    kinds = [f["type"] for f in frames]
                    assert kinds[0] == "toolcall" and kinds[1] == "token" and kinds[-1] == "done", kinds
                    assert frames[0]["payload"]["status"] == "no" and frames[0]["payload"]["raw"] == []
                    assert frames[0]["payload"]["label"] == label
                    assert frames[-1]["payload"]["text"] == "Sure, here you go."
    finally:
        await tool.aclose()
    assert chat.num_unfinished_requests() == 0


# -- a client that never reads -----------------------------------------------------------------


async def test_a_client_that_never_reads_is_throttled_then_dropped_with_bounded_memory() -> None:
    pulled = 0
    piece = "x" * 16383 + " "

    async def endless(request: ChatRequest) -> AsyncIterator[str]:
        nonlocal pulled
        while True:
            pulled += 1
            yield piece

    engine = FunctionEngine(endless)
    # a frame per engine delta (no coalescing), so the frames are the engine's 16 KiB pieces
    async with live_server(engine, ws_send_timeout_s=3, chat_max_out=10**9, stream_flush_ms=0) as origin:
        sluggish = await websockets.connect(
            f"{origin}/ws?api_key={KEY}",
            max_queue=1,
            max_size=None,
            compression=None,  # wire bytes = frame bytes
        )
        client = Recorder(sluggish)
        await client.start()
        await client.send("message", "t1", user_utterance="talk forever", sampling={"max_tokens": 10**8})
        # the client now reads nothing: once the socket buffers are full the server must stop
        # pulling from the engine (the turn still running), not buffer
        stalled_at, held = -1, False
        for _ in range(80):
            stalled_at = pulled
            await asyncio.sleep(0.1)
            if pulled == stalled_at and engine.num_unfinished_requests() == 1:
                held = True
                break
        assert held, "the server kept reading the engine for a client that reads nothing"
        assert pulled * len(piece) < 64 * 2**20, f"{pulled} frames of 16 KiB went out before backpressure held"
        # after WS_SEND_TIMEOUT_S the connection is dropped: turn aborted, slot freed
        async with httpx.AsyncClient(base_url=http_origin(origin), headers={"X-API-Key": KEY}) as http:
            for _ in range(150):
                slots = (await http.get("/status")).json()["active_connections"]
                if not engine.num_unfinished_requests() and not slots:
                    break
                await asyncio.sleep(0.1)
        assert engine.num_unfinished_requests() == 0 and slots == 0
        async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:  # others are served meanwhile
            other = Recorder(ws, "s2")
            await other.start()
            engine.fn = _short
            assert (await other.turn("o1"))[-1]["type"] == "done"
        # when the client finally reads, it gets what was buffered, then an abnormal close (1006)
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            while True:
                await asyncio.wait_for(sluggish.recv(), 10)
        assert closed.value.rcvd is None
        await sluggish.close()


async def _short(request: ChatRequest) -> AsyncIterator[str]:
    for word in ("all", "good"):
        yield word + " "
