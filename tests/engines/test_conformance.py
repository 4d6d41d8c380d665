"""One behaviour suite for every engine that runs here: the fake, real vLLM (CPU build) on the demo model,
the TensorRT-LLM adapter over its CPU stand-in (tests/stand_ins; TensorRT-LLM itself needs a GPU), and the
remote engine against vLLM's real OpenAI server and against Yap's own /v1/chat/completions, both on that model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from yap_engines import ChatRequest, Delta, FakeEngine, InferenceEngine, Sampling, StructuredOutput, normalize_json
from yap_engines.adapters.fake import piece_token_id, split_pieces
from yap_engines.chat import render_ids
from yap_engines.protocol import SupportsPrefill
from yap_engines.replicas import ReplicatedEngine


class Subject:
    """An engine under test plus how to read its output back."""

    def __init__(self, engine: InferenceEngine, decode: Callable[[list[int]], str], eos_id: int | None) -> None:
        self.engine = engine
        self.decode = decode
        self.eos_id = eos_id

    def unfinished(self) -> int:
        return int(self.engine.num_unfinished_requests())  # type: ignore[attr-defined]

    def sampling(self, **overrides: Any) -> Sampling:
        """Seeded sampling with EOS banned, so lengths and cut points are under the test's control."""
        bias = {self.eos_id: -100.0} if self.eos_id is not None else None
        return Sampling(**{"seed": 7, "max_tokens": 24, "logit_bias": bias, **overrides})


@pytest.fixture(scope="session")
def fake_engine() -> FakeEngine:
    return FakeEngine(seed=3, script=["Hello there, this is a fairly long scripted reply with many words in it "
                                      "so that limits, stop strings and cancellation all have room to act."])


REMOTE = [pytest.param(name, marks=pytest.mark.vllm) for name in ("remote_vllm", "remote_yap")]


@pytest.fixture(params=["fake", "replicated", "vllm", "trt", *REMOTE])
def subject(request: pytest.FixtureRequest, demo_tokenizer: Any, fake_engine: FakeEngine) -> Subject:
    if request.param == "fake":
        return Subject(fake_engine, decode=lambda ids: "", eos_id=None)
    if request.param == "replicated":  # two fake replicas behind the replicated engine
        replicas = {name: FakeEngine(seed=3, script=fake_engine.script) for name in ("a", "b")}
        pieces = {piece_token_id(p): p for p in split_pieces((replicas["a"].script or [""])[0])}
        return Subject(
            ReplicatedEngine(replicas, health_interval_s=0),
            decode=lambda ids: "".join(pieces[t] for t in ids),
            eos_id=None,
        )
    engine = request.getfixturevalue(f"{request.param}_engine")  # vllm_engine, trt_engine, remote_*_engine
    return Subject(engine, decode=lambda ids: demo_tokenizer.decode(ids, skip_special_tokens=True),
                   eos_id=demo_tokenizer.eos_token_id)


@pytest.fixture
def prompt_ids(demo_tokenizer: Any) -> list[int]:
    return render_ids(demo_tokenizer, [
        {"role": "system", "content": "You are a brief voice assistant."},
        {"role": "user", "content": f"Tell me something ({uuid.uuid4().hex[:6]})."},
    ])


def request_for(ids: list[int], sampling: Sampling, **kw: Any) -> ChatRequest:
    return ChatRequest(f"t-{uuid.uuid4().hex}", tuple(ids), sampling, **kw)


async def collect(engine: InferenceEngine, request: ChatRequest) -> list[Delta]:
    return [delta async for delta in engine.generate(request)]


async def test_deltas_concatenate_and_only_the_last_finishes(subject: Subject, prompt_ids: list[int]) -> None:
    deltas = await collect(subject.engine, request_for(prompt_ids, subject.sampling()))
    assert [d.finished for d in deltas] == [False] * (len(deltas) - 1) + [True]
    text = "".join(d.text for d in deltas)
    token_ids = [t for d in deltas for t in d.token_ids]
    assert text
    if isinstance(subject.engine, FakeEngine):
        assert subject.engine.script and subject.engine.script[0].startswith(text)
    else:
        # The incremental detokenizer holds back a UTF-8 sequence left unfinished at the end of the
        # reply, which a one-shot decode renders as U+FFFD; everything else must match exactly.
        decoded = subject.decode(token_ids)
        assert decoded.startswith(text)
        assert set(decoded[len(text) :]) <= {"\ufffd"}


async def test_usage_matches_the_tokens(subject: Subject, prompt_ids: list[int]) -> None:
    deltas = await collect(subject.engine, request_for(prompt_ids, subject.sampling(max_tokens=9)))
    usage = deltas[-1].usage
    assert usage is not None
    assert usage.prompt_tokens == len(prompt_ids)
    assert usage.completion_tokens == sum(len(d.token_ids) for d in deltas) == 9


async def test_max_tokens_finishes_with_length(subject: Subject, prompt_ids: list[int]) -> None:
    deltas = await collect(subject.engine, request_for(prompt_ids, subject.sampling(max_tokens=5)))
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 5


async def test_stop_string_cuts_the_reply(subject: Subject, prompt_ids: list[int]) -> None:
    full = "".join(d.text for d in await collect(subject.engine, request_for(prompt_ids, subject.sampling())))
    start = next(i for i in range(6, len(full) - 2) if full[i : i + 2].isalnum())
    stop = full[start : start + 2]
    cut = full.find(stop)
    deltas = await collect(subject.engine, request_for(prompt_ids, subject.sampling(stop=[stop])))
    assert deltas[-1].finish_reason == "stop"
    assert "".join(d.text for d in deltas) == full[:cut]


async def test_cancelling_the_consumer_aborts_the_request(subject: Subject, prompt_ids: list[int]) -> None:
    request = request_for(prompt_ids, subject.sampling(max_tokens=150))
    got_three = asyncio.Event()

    async def consume() -> None:
        # aclosing: the stream is closed (and so aborted) even when the task is cancelled while
        # it is busy elsewhere, not only while it waits for the next delta.
        async with contextlib.aclosing(subject.engine.generate(request)) as stream:
            count = 0
            async for _ in stream:
                count += 1
                if count == 3:
                    got_three.set()
                await asyncio.sleep(0.01)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_three.wait(), 30)
    assert subject.unfinished() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert subject.unfinished() == 0


async def test_cancelling_while_waiting_for_a_delta_aborts_the_request(subject: Subject, prompt_ids: list[int]) -> None:
    request = request_for(prompt_ids, subject.sampling(max_tokens=150))
    stream = subject.engine.generate(request)
    await anext(stream)
    waiting = asyncio.create_task(anext(stream))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # let it start waiting inside the engine
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert subject.unfinished() == 0


async def test_closing_the_stream_aborts_the_request(subject: Subject, prompt_ids: list[int]) -> None:
    stream = subject.engine.generate(request_for(prompt_ids, subject.sampling(max_tokens=150)))
    await anext(stream)
    assert subject.unfinished() == 1
    await stream.aclose()  # type: ignore[attr-defined]
    assert subject.unfinished() == 0


async def test_abort_from_outside_ends_the_stream_cancelled(subject: Subject, prompt_ids: list[int]) -> None:
    request = request_for(prompt_ids, subject.sampling(max_tokens=150))
    deltas: list[Delta] = []
    async for delta in subject.engine.generate(request):
        deltas.append(delta)
        if len(deltas) == 2:
            await subject.engine.abort(request.request_id)
    assert deltas[-1].finish_reason == "cancelled"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens < 150
    assert subject.unfinished() == 0


async def test_a_shared_long_prefix_hits_the_prefix_cache(subject: Subject, demo_tokenizer: Any) -> None:
    # Unique from the first token: engines shared by several subjects must not have this prefix cached yet.
    persona = uuid.uuid4().hex + " You are a helpful voice assistant." * 40
    first = render_ids(demo_tokenizer, [{"role": "system", "content": persona}, {"role": "user", "content": "One?"}])
    second = render_ids(demo_tokenizer, [{"role": "system", "content": persona}, {"role": "user", "content": "Two!"}])
    assert len(first) > 300
    cold = (await collect(subject.engine, request_for(first, subject.sampling(max_tokens=2))))[-1].usage
    warm = (await collect(subject.engine, request_for(second, subject.sampling(max_tokens=2))))[-1].usage
    assert cold is not None and warm is not None
    assert cold.cached_tokens == 0
    assert 0 < warm.cached_tokens < len(second)


SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"enum": ["yes", "no"]},
        "count": {"type": "integer"},
        "ok": {"type": "boolean"},
    },
    "required": ["answer", "count", "ok"],
    "additionalProperties": False,
}


async def test_json_schema_output_parses_and_validates(subject: Subject, prompt_ids: list[int]) -> None:
    request = request_for(prompt_ids, Sampling(seed=11, max_tokens=60), structured_output=StructuredOutput.json_schema(SCHEMA))
    deltas = await collect(subject.engine, request)
    assert deltas[-1].finish_reason == "stop"
    value = json.loads(normalize_json("".join(d.text for d in deltas)))
    jsonschema.validate(value, SCHEMA)


async def test_choice_output_is_exactly_one_option(subject: Subject, prompt_ids: list[int]) -> None:
    options = ["take a screenshot", "answer directly"]
    request = request_for(prompt_ids, Sampling(seed=5, max_tokens=20), structured_output=StructuredOutput.choice(options))
    assert "".join(d.text for d in await collect(subject.engine, request)) in options


async def test_health_is_ok_while_serving(subject: Subject) -> None:
    health = await subject.engine.health()
    assert health.ok, health.detail


# -- warms (prefill) -----------------------------------------------------------------------------


def warm_messages() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """A persona unique from its first token (engines are shared), and the final prompt's messages after it."""
    persona = [{"role": "system", "content": uuid.uuid4().hex + " You are a helpful voice assistant." * 40}]
    return persona, [*persona, {"role": "user", "content": "What is the weather in Austin?"}]


async def test_a_warm_caches_the_prompt_for_the_next_request(subject: Subject, demo_tokenizer: Any) -> None:
    assert isinstance(subject.engine, SupportsPrefill)
    persona, final = warm_messages()
    warm_ids = render_ids(demo_tokenizer, persona, add_generation_prompt=False)
    final_ids = render_ids(demo_tokenizer, final)
    assert final_ids[: len(warm_ids)] == warm_ids and len(warm_ids) > 300
    result = await subject.engine.prefill(request_for(warm_ids, subject.sampling(), messages=persona))
    assert subject.unfinished() == 0
    assert result.prompt_tokens >= len(warm_ids) and 0 < result.cached_tokens <= result.prompt_tokens
    usage = (await collect(subject.engine, request_for(final_ids, subject.sampling(max_tokens=2), messages=final)))[
        -1
    ].usage
    assert usage is not None and usage.cached_tokens > 0
    if subject.engine.name != "openai":  # a remote does not say what it cached; the others count whole blocks
        assert usage.cached_tokens >= result.cached_tokens


async def test_a_cancelled_warm_leaves_nothing_running(subject: Subject, demo_tokenizer: Any) -> None:
    assert isinstance(subject.engine, SupportsPrefill)
    persona, _ = warm_messages()
    ids = render_ids(demo_tokenizer, persona, add_generation_prompt=False)
    for yields in (0, 1, 3):  # cancelled before it reaches the engine, just after, and while it runs
        task = asyncio.create_task(subject.engine.prefill(request_for(ids, subject.sampling(), messages=persona)))
        for _ in range(yields):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert subject.unfinished() == 0
