from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yap_engines import (
    ChatRequest,
    EngineDeadError,
    FakeEngine,
    FunctionEngine,
    GenerationError,
    InvalidRequestError,
    Sampling,
    StructuredOutput,
    UnsupportedFeature,
)


def req(rid: str = "r1", prompt: tuple[int, ...] = (1, 2, 3), **sampling: object) -> ChatRequest:
    return ChatRequest(rid, prompt, Sampling(**sampling))  # type: ignore[arg-type]


async def text_of(engine: FakeEngine | FunctionEngine, request: ChatRequest) -> str:
    return "".join([d.text async for d in engine.generate(request)])


async def test_seeded_text_is_deterministic_and_depends_on_the_seed() -> None:
    a = await text_of(FakeEngine(seed=1), req())
    assert a == await text_of(FakeEngine(seed=1), req())
    assert a != await text_of(FakeEngine(seed=2), req())


async def test_script_replies_in_order_and_cycles() -> None:
    engine = FakeEngine(script=["one", "two"])
    assert [await text_of(engine, req(f"r{i}")) for i in range(3)] == ["one", "two", "one"]


async def test_fail_after_raises_a_generation_error_and_frees_the_request() -> None:
    engine = FakeEngine(text="a b c d e f", fail_after=2)
    seen: list[str] = []
    with pytest.raises(GenerationError, match="after 2 tokens"):
        async for delta in engine.generate(req()):
            seen.append(delta.text)
    assert seen == ["a", " b"]
    assert engine.num_unfinished_requests() == 0


async def test_cancel_during_the_first_token_delay_frees_the_request() -> None:
    engine = FakeEngine(text="hello", first_token_delay_s=30)

    async def consume() -> None:
        async for _ in engine.generate(req()):
            pass

    task = asyncio.create_task(consume())
    while engine.num_unfinished_requests() == 0:  # noqa: ASYNC110 - polling engine state is the point
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.num_unfinished_requests() == 0


async def test_abort_during_a_slow_stream_ends_it_promptly() -> None:
    engine = FakeEngine(text="a b c d e f g h", tokens_per_s=0.5)
    deltas = []
    async for delta in engine.generate(req()):
        deltas.append(delta)
        await engine.abort("r1")
    assert [d.text for d in deltas] == ["a", ""]
    assert deltas[-1].finish_reason == "cancelled"


async def test_a_running_request_id_cannot_be_reused() -> None:
    engine = FakeEngine(text="a b c")
    stream = engine.generate(req())
    await anext(stream)
    with pytest.raises(InvalidRequestError, match="already running"):
        await anext(engine.generate(req()))
    await stream.aclose()


async def test_stop_strings_spanning_tokens_are_never_streamed() -> None:
    engine = FakeEngine(text="one two three four")
    deltas = [d async for d in engine.generate(req(stop=["o th"]))]
    assert "".join(d.text for d in deltas) == "one tw"
    assert deltas[-1].finish_reason == "stop"


async def test_structured_outputs() -> None:
    engine = FakeEngine()
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}, "required": ["n"]}
    request = ChatRequest("s", (1,), structured_output=StructuredOutput.json_schema(schema))
    assert await text_of(engine, request) == '{"n": 3}'
    choice = ChatRequest("c", (1,), structured_output=StructuredOutput.choice(["yes", "no"]))
    assert await text_of(engine, choice) in ("yes", "no")
    with pytest.raises(UnsupportedFeature, match="regex"):
        await text_of(engine, ChatRequest("x", (1,), structured_output=StructuredOutput.regex("[0-9]+")))
    assert engine.num_unfinished_requests() == 0  # a refused request holds no slot


async def test_a_killed_engine_fails_health_and_requests() -> None:
    engine = FakeEngine(text="a b")
    assert (await engine.health()).ok
    engine.kill("test")
    health = await engine.health()
    assert not health.ok and "test" in health.detail
    with pytest.raises(EngineDeadError):
        await text_of(engine, req())


async def test_aclose_is_idempotent_and_ends_the_engine() -> None:
    async with FakeEngine(text="a") as engine:
        assert await text_of(engine, req()) == "a"
    await engine.aclose()
    assert not (await engine.health()).ok


async def test_function_engine_streams_what_the_function_yields() -> None:
    async def pieces(request: ChatRequest) -> AsyncIterator[str]:
        for piece in ("<think>", "hm", "</think>", "Hi", "!"):
            yield piece

    engine = FunctionEngine(pieces)
    deltas = [d async for d in engine.generate(req(max_tokens=4))]
    assert "".join(d.text for d in deltas) == "<think>hm</think>Hi"
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 4


async def test_stream_interval_sends_the_first_token_alone_then_groups_of_n() -> None:
    text = " ".join(f"w{i}" for i in range(11))
    engine = FakeEngine(text=text, stream_interval=4)
    deltas = [d async for d in engine.generate(req(max_tokens=100))]
    assert [len(d.token_ids) for d in deltas] == [1, 4, 4, 2]  # the last two ride on the final delta
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage is not None
    assert deltas[-1].usage.completion_tokens == 11
    assert "".join(d.text for d in deltas) == text
    with pytest.raises(ValueError, match="stream_interval"):
        FakeEngine(stream_interval=0)


async def test_tokens_that_fall_due_while_the_reader_is_busy_come_as_one_delta() -> None:
    text = " ".join(f"w{i}" for i in range(400))
    engine = FakeEngine(text=text, tokens_per_s=1000)
    sizes: list[int] = []
    received = ""
    async for delta in engine.generate(req(max_tokens=1000)):
        sizes.append(len(delta.token_ids))
        received += delta.text
        if len(sizes) == 2:
            await asyncio.sleep(0.1)  # a busy reader: ~100 tokens fall due meanwhile
    assert received == text
    assert sizes[0] == 1
    assert max(sizes[2:]) >= 50  # what fell due during the pause came together
    assert sum(sizes) == 400


async def test_abort_ends_a_long_pause_at_once() -> None:
    engine = FakeEngine(text="a b c", tokens_per_s=0.01)  # 100 s between tokens
    stream = engine.generate(req())
    first = await stream.__anext__()
    assert first.text == "a"
    pending = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.01)
    await engine.abort("r1")
    last = await asyncio.wait_for(pending, 1)
    assert last.finish_reason == "cancelled"
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    assert engine.num_unfinished_requests() == 0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 3), max_size=30), max_size=6),
    st.lists(st.integers(0, 3), max_size=30),
)
def test_the_prefix_cache_finds_the_longest_shared_prefix(seen: list[list[int]], prompt: list[int]) -> None:
    engine = FakeEngine()
    engine._seen_prompts.extend(tuple(s) for s in seen)

    def shared(a: list[int], b: list[int]) -> int:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    assert engine._common_prefix(prompt) == max((shared(s, prompt) for s in seen), default=0)
