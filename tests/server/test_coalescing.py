"""Coalesced streaming at the generation pipeline's token-to-frame point (`Generation._flush`).

The rule (`yap_server.streaming.Generation`): the first visible piece goes out as its delta arrives; after
it, text is flushed by the first delta `STREAM_FLUSH_MS` or more after the last frame, and always before the
stream ends; cancellation drops the pending text, so `content` (what history keeps) is what was sent.
The unit tests drive `Generation` with an injected clock; the route tests run a real `/ws` server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yap_engines import ChatRequest, Delta, EngineSettings, FunctionEngine, Sampling, Usage
from yap_engines.thinking import ThinkSplit
from yap_server.streaming import Generation
from yap_server.ws.sanitize import StreamSanitizer

from .conftest import KEY, RecordingFake, live_server


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class QuietTelemetry:
    """The parts of `TurnTelemetry` a generation calls."""

    def delta(self) -> None: ...

    def generation_started(self) -> None: ...

    def generation_ended(self, usage: Any) -> None: ...

    def first_token(self, seconds: float) -> None: ...

    def report_exception(self, exc: BaseException, text: str | None = None) -> None: ...


@dataclass
class TimedEngine:
    """Yields `pieces` (text, seconds after the previous delta) on the injected clock; `hang` blocks after them."""

    clock: Clock
    pieces: Sequence[tuple[str, float]]
    hang: bool = False
    produced: int = 0

    async def generate(self, request: ChatRequest) -> AsyncIterator[Delta]:
        for i, (text, gap) in enumerate(self.pieces):
            self.clock.now += gap
            self.produced = i + 1
            last = i == len(self.pieces) - 1 and not self.hang
            usage = Usage(1, len(self.pieces)) if last else None
            yield Delta(text, (i,), "stop" if last else None, usage)
            await asyncio.sleep(0)
        if self.hang:
            await asyncio.Event().wait()


@dataclass
class Frames:
    """A sink recording each piece with the clock and how many deltas the engine had produced."""

    clock: Clock
    engine: TimedEngine
    pieces: list[ThinkSplit] = field(default_factory=list)
    at: list[float] = field(default_factory=list)
    produced: list[int] = field(default_factory=list)

    async def emit(self, piece: ThinkSplit) -> bool:
        self.pieces.append(piece)
        self.at.append(self.clock.now)
        self.produced.append(self.engine.produced)
        return True

    @property
    def content(self) -> str:
        return "".join(p.content for p in self.pieces)

    @property
    def reasoning(self) -> str:
        return "".join(p.reasoning for p in self.pieces)


async def stream(
    pieces: Sequence[tuple[str, float]], flush_ms: float, *, sanitize: bool = False, hang: bool = False
) -> tuple[Generation, Frames]:
    clock = Clock()
    engine = TimedEngine(clock, pieces, hang=hang)
    sink = Frames(clock, engine)
    generation = Generation(
        engine,  # type: ignore[arg-type]  # only `generate` is read
        ChatRequest("r", [1], Sampling()),
        QuietTelemetry(),  # type: ignore[arg-type]
        opens_thinking=False,
        reasoning=True,
        filters=[StreamSanitizer()] if sanitize else (),
        flush_s=flush_ms / 1000,
        clock=clock,
    )
    await generation.run(sink)
    return generation, sink


WORDS = ["Hello", " there", ",", " how", " are", " you", "?", " <think>", "hmm", "</think>", " Fine", ".", " *wave*"]
deltas = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from([0.0, 0.001, 0.004, 0.012, 0.03, 0.2])), min_size=1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deltas, st.sampled_from([5.0, 25.0, 60.0]), st.booleans())
def test_frames_concatenate_to_the_same_text_as_a_frame_per_delta(
    pieces: list[tuple[str, float]], flush_ms: float, sanitize: bool
) -> None:
    async def both() -> None:
        plain, plain_frames = await stream(pieces, 0, sanitize=sanitize)
        coalesced, frames = await stream(pieces, flush_ms, sanitize=sanitize)
        assert frames.content == plain_frames.content
        assert frames.reasoning == plain_frames.reasoning
        assert coalesced.content == plain.content and coalesced.token_ids == plain.token_ids
        assert len(frames.pieces) <= len(plain_frames.pieces)
        # the first frame leaves with the delta that made it; later frames (but the end's) keep the interval
        if frames.pieces:
            assert frames.produced[0] == plain_frames.produced[0]
            middle = frames.at[: len(frames.at) - 1]
            assert all(b - a >= flush_ms / 1000 - 1e-9 for a, b in itertools.pairwise(middle))

    asyncio.run(both())


async def test_flush_zero_keeps_one_frame_per_delta() -> None:
    _, frames = await stream([("a", 0.0), ("b", 0.0), ("c", 0.0)], 0)
    assert [p.content for p in frames.pieces] == ["a", "b", "c"]


async def test_the_first_frame_is_never_delayed() -> None:
    _, frames = await stream([("Hi", 0.0), (" you", 0.0), (" there", 0.0)], 1000)
    assert frames.pieces[0].content == "Hi" and frames.produced[0] == 1  # sent before the second delta existed
    assert [p.content for p in frames.pieces] == ["Hi", " you there"]


async def test_the_first_visible_text_is_not_held_behind_invisible_deltas() -> None:
    _, frames = await stream([("<think>", 0.0), ("</think>", 0.0), ("Yes", 0.0), ("!", 0.0)], 1000)
    assert frames.pieces[0].content == "Yes" and frames.produced[0] == 3


async def test_the_end_of_the_stream_flushes_what_is_pending() -> None:
    generation, frames = await stream([("One", 0.0), (" two", 0.001), (" three", 0.001)], 1000)
    assert [p.content for p in frames.pieces] == ["One", " two three"]
    assert frames.produced[-1] == 3 and generation.content == "One two three"


async def test_a_delta_past_the_interval_flushes_the_text_held_before_it() -> None:
    _, frames = await stream([("A", 0.0), ("b", 0.005), ("c", 0.005), ("d", 0.030), ("e", 0.001)], 25)
    assert [p.content for p in frames.pieces] == ["A", "bcd", "e"]


async def test_cancel_drops_the_pending_text_and_content_is_what_was_sent() -> None:
    clock = Clock()
    engine = TimedEngine(clock, [("Sure", 0.0), (" thing", 0.001), (" and more", 0.001)], hang=True)
    sink = Frames(clock, engine)
    generation = Generation(
        engine,  # type: ignore[arg-type]
        ChatRequest("r", [1], Sampling()),
        QuietTelemetry(),  # type: ignore[arg-type]
        opens_thinking=False,
        flush_s=1.0,
        clock=clock,
    )
    task = asyncio.ensure_future(generation.run(sink))
    await asyncio.sleep(0.05)
    assert engine.produced == 3  # all three deltas arrived; the engine now stalls with two pending
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.content == "Sure"
    assert generation.content == "Sure" and generation.token_ids == [0]


def test_stream_flush_ms_maps_to_engine_tokens() -> None:
    assert EngineSettings(stream_flush_ms=0).stream_interval_tokens == 1
    assert EngineSettings(stream_flush_ms=10).stream_interval_tokens == 1
    assert EngineSettings(stream_flush_ms=25).stream_interval_tokens == 2
    assert EngineSettings(stream_flush_ms=100).stream_interval_tokens == 8


# -- on a real /ws server -------------------------------------------------------------------------


def envelope(kind: str, rid: str, **payload: Any) -> str:
    return json.dumps({"type": kind, "session_id": "s1", "request_id": rid, "payload": payload})


async def until_terminal(ws: Any, rid: str) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if frame.get("request_id") == rid:
            frames.append(frame)
            if frame["type"] in ("done", "cancelled", "error"):
                return frames


async def test_ws_frames_are_coalesced_and_done_follows_the_last_flush() -> None:
    text = " ".join(f"word{i}" for i in range(60)) + "."
    async with live_server(RecordingFake(text=text), stream_flush_ms=50) as origin:
        async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:
            await ws.send(envelope("start", "a", chat_prompt="Be brief.", user_utterance="hi"))
            frames = await until_terminal(ws, "a")
    tokens = [f["payload"]["text"] for f in frames if f["type"] == "token"]
    assert frames[-1]["type"] == "done" and frames[-1]["payload"]["text"] == "".join(tokens)
    assert "".join(tokens).lower() == text.lower()  # the /ws sanitizer capitalises the first word
    assert len(tokens) < 30  # far fewer frames than the reply's 61 pieces


async def test_barge_in_mid_accumulation_keeps_in_history_what_the_client_was_sent() -> None:
    async def reply(request: ChatRequest) -> AsyncIterator[str]:
        yield "First"
        for _ in range(20):
            yield " more"
        await asyncio.Event().wait()  # the engine stalls with text pending

    engine = FunctionEngine(reply)
    recorder = RecordingFake(text="ok")
    async with live_server(engine, stream_flush_ms=1000) as origin:
        async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:
            await ws.send(envelope("start", "a", chat_prompt="Be brief.", user_utterance="hi"))
            first = json.loads(await asyncio.wait_for(ws.recv(), 20))
            while first["type"] != "token":
                first = json.loads(await asyncio.wait_for(ws.recv(), 20))
            await asyncio.sleep(0.2)  # the rest is pending in the server
            await ws.send(envelope("cancel", "a"))
            frames = await until_terminal(ws, "a")
            sent = first["payload"]["text"] + "".join(f["payload"]["text"] for f in frames if f["type"] == "token")
            assert frames[-1]["type"] == "cancelled"
            assert sent == "First"  # the pending text was dropped, not flushed

            async def answer(request: ChatRequest) -> AsyncIterator[str]:
                recorder.requests.append(request)
                yield "ok"

            engine.fn = answer
            await ws.send(envelope("message", "b", user_utterance="and?"))
            await until_terminal(ws, "b")
    messages = recorder.requests[-1].messages or []
    assistant = [m["content"] for m in messages if m["role"] == "assistant"]
    assert assistant == ["First"]
