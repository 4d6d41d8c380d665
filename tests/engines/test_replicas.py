"""`SessionBalancer` (rendezvous hashing with bounded load, property-tested) and `ReplicatedEngine`
(retry before the first token, continuation after it) over in-process fake replicas."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yap_engines import ChatRequest, FakeEngine, FunctionEngine, GenerationError, InvalidRequestError, Sampling
from yap_engines.adapters.fake import FakeTokenizer
from yap_engines.balance import SessionBalancer, rendezvous_rank
from yap_engines.chat import render_ids
from yap_engines.replicas import ReplicatedEngine

REPLICAS = ["a", "b", "c", "d"]

# -- the balancer ------------------------------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("talk"), st.integers(0, 40)),  # a session's turn (new or returning)
        st.tuples(st.just("down"), st.sampled_from(REPLICAS)),
        st.tuples(st.just("up"), st.sampled_from(REPLICAS)),
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_a_session_moves_only_when_its_replica_is_down_and_new_sessions_respect_the_bound(ops: list[Any]) -> None:
    balancer = SessionBalancer(REPLICAS, load_factor=1.25, clock=lambda: 0.0)
    where: dict[str, str] = {}
    for op, arg in ops:
        if op == "down":
            balancer.mark_down(arg)
            continue
        if op == "up":
            balancer.mark_up(arg)
            continue
        session = f"s{arg}"
        before = where.get(session)
        up = balancer.up()
        loads = balancer.loads()
        chosen = balancer.pick(session)
        if before is not None and before in up:
            assert chosen == before  # sticky while its replica is up, whatever the load
        else:
            assert chosen in (up or REPLICAS)
            if up:  # a new (or displaced) session: the first of its ranking under the bound
                if before is not None:
                    loads[before] -= 1
                total = sum(loads[r] for r in up)
                bound = math.ceil(1.25 * (total + 1) / len(up))
                assert loads[chosen] + 1 <= bound
                for better in rendezvous_rank(session, up):
                    if better == chosen:
                        break
                    assert loads[better] + 1 > bound  # skipped only because it was full
        where[session] = chosen


def test_with_every_replica_up_sessions_spread_and_stay() -> None:
    balancer = SessionBalancer(REPLICAS)
    first = {f"s{i}": balancer.pick(f"s{i}") for i in range(400)}
    assert max(balancer.loads().values()) <= math.ceil(1.25 * 400 / 4)
    assert all(balancer.pick(s) == r for s, r in first.items())
    balancer.mark_down("a")
    moved = {s for s, r in first.items() if balancer.pick(s) != r}
    assert moved == {s for s, r in first.items() if r == "a"}  # only the dead replica's sessions move


def test_a_replica_that_failed_the_request_is_the_last_choice_even_when_the_others_look_down() -> None:
    balancer = SessionBalancer(["a", "b"])
    home = balancer.pick("s")
    other = "b" if home == "a" else "a"
    balancer.mark_down(other)  # a slow health check on a loaded host
    balancer.mark_down(home)  # it just failed
    assert balancer.pick("s", avoid={home}) == other
    assert balancer.pick("s", avoid={"a", "b"}) in ("a", "b")


def test_idle_sessions_are_forgotten() -> None:
    now = [0.0]
    balancer = SessionBalancer(["a", "b"], idle_s=10, clock=lambda: now[0])
    balancer.pick("s1")
    now[0] = 11.0
    assert sum(balancer.loads().values()) == 0


# -- the replicated engine ---------------------------------------------------------------------------

TOKENIZER = FakeTokenizer()
PROMPT = render_ids(TOKENIZER, [{"role": "user", "content": "Tell me something."}])


def turn(rid: str = "r1", **kw: Any) -> ChatRequest:
    return ChatRequest(rid, PROMPT, kw.pop("sampling", Sampling(max_tokens=200, seed=7)), session_id="sess", **kw)


class Recording(FakeEngine):
    """A fake replica that records its requests and can die after `die_after` tokens of one request."""

    def __init__(self, die_after: int | None = None, **kw: Any) -> None:
        super().__init__(seed=3, tokens_per_s=400, **kw)
        self.requests: list[ChatRequest] = []
        self.die_after = die_after

    async def generate(self, request: ChatRequest) -> AsyncIterator[Any]:  # type: ignore[override]
        self.requests.append(request)
        count = 0
        async with contextlib.aclosing(super().generate(request)) as stream:
            async for delta in stream:
                count += len(delta.token_ids)
                if self.die_after is not None and count >= self.die_after and not delta.finished:
                    self.die_after = None
                    self.kill("SIGKILL")
                    yield delta
                    await asyncio.sleep(0)
                    raise GenerationError("the connection broke mid-stream")
                yield delta


async def collect(engine: ReplicatedEngine, request: ChatRequest) -> list[Any]:
    return [d async for d in engine.generate(request)]


async def reference_text(request: ChatRequest) -> tuple[str, list[int]]:
    deltas = [d async for d in Recording().generate(request)]
    return "".join(d.text for d in deltas), [t for d in deltas for t in d.token_ids]


async def test_a_replica_dying_mid_stream_continues_on_another_from_the_streamed_tokens() -> None:
    request = turn()
    text, ids = await reference_text(request)
    first = "a" if rendezvous_rank("sess", ["a", "b"])[0] == "a" else "b"
    replicas = {first: Recording(die_after=5), ({"a", "b"} - {first}).pop(): Recording()}
    async with ReplicatedEngine(replicas, health_interval_s=0) as engine:
        deltas = await collect(engine, request)
        other = next(r for n, r in replicas.items() if n != first)
        # the continuation's raw token prompt is exactly the prompt plus the streamed ids
        (resumed,) = other.requests
        streamed = len(resumed.prompt_token_ids) - len(PROMPT)
        assert streamed >= 5 and tuple(resumed.prompt_token_ids) == (*PROMPT, *ids[:streamed])
        assert resumed.messages == () and resumed.sampling.max_tokens == 200 - streamed
        # one continuous stream: the same text and ids as an uninterrupted run, nothing twice
        assert "".join(d.text for d in deltas) == text
        assert [t for d in deltas for t in d.token_ids] == ids
        assert [d.finished for d in deltas].count(True) == 1
        assert deltas[-1].usage.completion_tokens == len(ids) and deltas[-1].usage.prompt_tokens == len(PROMPT)
        stats = engine.stats()
        assert (stats["attempts"], stats["migrations"], stats["retries"], stats["lost"]) == (2, 1, 0, 0)
        assert stats["up"][first] is False
        # the session's next turn lands on the surviving replica
        await collect(engine, turn("r2"))
        assert len(other.requests) == 2 and other.requests[1].prompt_token_ids == tuple(PROMPT)


async def test_a_failure_before_the_first_token_is_retried_and_a_refusal_is_not() -> None:
    async def refuse(request: ChatRequest) -> AsyncIterator[str]:
        raise GenerationError("connection refused")
        yield ""

    async def invalid(request: ChatRequest) -> AsyncIterator[str]:
        raise InvalidRequestError("bad request")
        yield ""

    first = rendezvous_rank("sess", ["a", "b"])[0]
    second = ({"a", "b"} - {first}).pop()
    async with ReplicatedEngine({first: FunctionEngine(refuse), second: FakeEngine(text="fine")}) as engine:
        deltas = await collect(engine, turn())
        assert "".join(d.text for d in deltas) == "fine"
        assert (engine.stats()["retries"], engine.stats()["migrations"]) == (1, 0)
    async with ReplicatedEngine({"a": FunctionEngine(invalid), "b": FunctionEngine(invalid)}) as engine:
        with pytest.raises(InvalidRequestError):
            await collect(engine, turn())
        assert (engine.stats()["attempts"], engine.stats()["lost"]) == (1, 1)


async def test_a_turn_that_cannot_be_saved_raises_and_the_next_one_runs() -> None:
    first = rendezvous_rank("sess", ["a", "b"])[0]
    second = ({"a", "b"} - {first}).pop()
    replicas = {first: Recording(die_after=3), second: Recording(die_after=2)}
    async with ReplicatedEngine(replicas, max_attempts=2, health_interval_s=0) as engine:
        with pytest.raises(GenerationError):
            await collect(engine, turn())
        assert engine.stats()["lost"] == 1
        replicas[first]._dead_reason = None  # the replica comes back; the health check puts it in again
        await engine.check_replicas()
        assert "".join(d.text for d in await collect(engine, turn("r2")))


async def test_cancel_aborts_the_replicas_request() -> None:
    replicas = {"a": Recording(), "b": Recording()}
    for replica in replicas.values():
        replica.tokens_per_s = 20
    async with ReplicatedEngine(replicas, health_interval_s=0) as engine:
        stream = engine.generate(turn())
        await anext(stream)
        assert engine.num_unfinished_requests() == 1
        assert sum(r.num_unfinished_requests() for r in replicas.values()) == 1
        await stream.aclose()
        assert engine.num_unfinished_requests() == 0
        # closing the stream aborted the replica's request
        assert sum(r.num_unfinished_requests() for r in replicas.values()) == 0


async def test_a_warm_goes_to_the_replica_that_keeps_the_session() -> None:
    from yap_engines.protocol import SupportsPrefill

    replicas = {"a": FakeEngine(seed=1, cache_block_size=4), "b": FakeEngine(seed=1, cache_block_size=4)}
    engine = ReplicatedEngine(replicas, health_interval_s=60)
    try:
        assert isinstance(engine, SupportsPrefill)
        ids = tuple(range(1, 40))
        warmed = await engine.prefill(ChatRequest("w1", ids, Sampling(max_tokens=1), session_id="s-warm"))
        assert warmed.cached_tokens > 0 and engine.num_unfinished_requests() == 0
        home = engine.replicas[engine.balancer.pick("s-warm")]
        deltas = [d async for d in engine.generate(ChatRequest("g1", ids, Sampling(max_tokens=2), session_id="s-warm"))]
        assert deltas[-1].usage is not None and deltas[-1].usage.cached_tokens >= warmed.cached_tokens
        other = next(r for r in replicas.values() if r is not home)
        assert other.requests_started == 0  # neither the warm nor the turn went elsewhere
    finally:
        await engine.aclose()
