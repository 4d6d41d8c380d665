"""The remote (`openai`) engine: its wire format and failure modes against a scripted server on loopback, and
cancellation against vLLM's real OpenAI server (the shared conformance suite covers the rest)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from remote_support import API_KEY, ChatMLMessages, StubServer, VllmServer, chunk, sse, usage_chunk
from starlette.responses import JSONResponse, PlainTextResponse

from yap_cli.loopback import free_port, serve_on_loopback
from yap_engines import ChatRequest, GenerationError, Sampling, StructuredOutput, load_engine
from yap_engines.adapters.openai import (
    RemoteConnectError,
    RemoteDelta,
    RemoteEngine,
    RemoteProtocolError,
    RemoteStatusError,
    RemoteTimeoutError,
)
from yap_engines.replicas import ReplicatedEngine
from yap_engines.settings import EngineSettings, SettingsError

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]


def request(**kw: Any) -> ChatRequest:
    return ChatRequest(
        f"r-{uuid.uuid4().hex[:8]}", kw.pop("ids", ()), kw.pop("sampling", Sampling()), messages=MESSAGES, **kw
    )


async def stream(*events: Any, pause_s: float = 0.0) -> AsyncIterator[bytes]:
    for event in events:
        yield sse(event)
        await asyncio.sleep(pause_s)


@pytest.fixture
async def stub() -> AsyncIterator[tuple[StubServer, RemoteEngine]]:
    server = StubServer()
    async with serve_on_loopback(server.app()) as port:
        engine = RemoteEngine(f"http://127.0.0.1:{port}/v1", api_key="k1", read_timeout_s=1.0)
        try:
            yield server, engine
        finally:
            await engine.aclose()


async def collect(engine: RemoteEngine, req: ChatRequest) -> list[Any]:
    return [d async for d in engine.generate(req)]


async def test_request_carries_key_session_sampling_and_structured_output(
    stub: tuple[StubServer, RemoteEngine],
) -> None:
    server, engine = stub
    server.reply = lambda body: stream(chunk("ok", finish="stop"), usage_chunk(5, 1), "[DONE]")
    sampling = Sampling(
        temperature=0.3, top_p=0.9, top_k=20, max_tokens=33, stop=("END",), seed=4, logit_bias={7: -100}
    )
    await collect(
        engine, request(sampling=sampling, session_id="user-42", structured_output=StructuredOutput.regex("[0-9]+"))
    )
    await collect(engine, request(structured_output=StructuredOutput.json_schema({"type": "object"})))
    (headers, body), (_, plain) = server.requests
    assert headers["authorization"] == "Bearer k1" and headers["x-session-id"] == "user-42"
    assert body == {
        "model": "stub", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True},
        "temperature": 0.3, "top_p": 0.9, "max_tokens": 33, "presence_penalty": 0.0, "frequency_penalty": 0.0,
        "stop": ["END"], "seed": 4, "logit_bias": {"7": -100.0}, "top_k": 20, "return_token_ids": True,
        "structured_outputs": {"regex": "[0-9]+"},
    }  # fmt: skip
    # Neutral extension knobs are left out, so a plain OpenAI server accepts the request.
    assert not {"top_k", "min_p", "repetition_penalty", "structured_outputs"} & set(plain)
    assert plain["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {"type": "object"}},
    }


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
async def test_server_reasoning_is_rewrapped_as_a_think_block(
    stub: tuple[StubServer, RemoteEngine], field: str
) -> None:
    server, engine = stub
    server.reply = lambda body: stream(
        chunk(role="assistant", content=""),
        chunk(**{field: "let me "}, token_ids=[1, 2]),
        chunk(**{field: "see"}, token_ids=[3]),
        chunk("Yes", token_ids=[4]),
        chunk(" indeed.", finish="stop", token_ids=[5, 6]),
        {
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 6, "prompt_tokens_details": {"cached_tokens": 8}},
        },
        "[DONE]",
    )
    deltas = await collect(engine, request())
    assert "".join(d.text for d in deltas) == "<think>let me see</think>Yes indeed."
    assert all(isinstance(d, RemoteDelta) for d in deltas)
    assert "".join(d.reasoning for d in deltas) == "let me see" and "".join(d.content for d in deltas) == "Yes indeed."
    assert [t for d in deltas for t in d.token_ids] == [1, 2, 3, 4, 5, 6]
    assert (deltas[-1].finish_reason, deltas[-1].usage.as_dict()) == (
        "stop",
        {"prompt_tokens": 12, "completion_tokens": 6, "cached_tokens": 8},
    )
    assert [d.finished for d in deltas].count(True) == 1


async def test_a_request_with_token_ids_only_is_a_raw_token_prompt_to_the_completions_endpoint(
    stub: tuple[StubServer, RemoteEngine],
) -> None:
    """How a turn resumes on another replica: the ids go as `prompt: [ids]` to `/v1/completions`, whose
    text-completion chunks (`text`, not `delta`) stream back as deltas."""
    server, engine = stub
    text_chunk = {"object": "text_completion", "choices": [{"index": 0, "text": " more", "token_ids": [9]}]}
    last = {"object": "text_completion", "choices": [{"index": 0, "text": ".", "finish_reason": "stop"}]}
    server.reply = lambda body: stream(text_chunk, last, usage_chunk(4, 2), "[DONE]")
    deltas = await collect(engine, ChatRequest("ids-only", (1, 2, 3), Sampling(max_tokens=5), session_id="s-1"))
    assert "".join(d.text for d in deltas) == " more." and deltas[-1].finish_reason == "stop"
    ((headers, body),) = server.requests
    assert headers[":path"] == "/v1/completions" and headers["x-session-id"] == "s-1"
    assert body["prompt"] == [1, 2, 3] and "messages" not in body and body["max_tokens"] == 5


async def test_http_errors_map_and_are_not_retried(stub: tuple[StubServer, RemoteEngine]) -> None:
    server, engine = stub
    server.reply = lambda body: JSONResponse({"error": {"message": "bad key", "type": "auth"}}, status_code=401)
    with pytest.raises(RemoteStatusError, match=r"bad key.*OPENAI_API_KEY") as info:
        await collect(engine, request())
    assert info.value.status_code == 401 and isinstance(info.value, GenerationError)
    server.reply = lambda body: PlainTextResponse("boom", status_code=500)
    with pytest.raises(RemoteStatusError, match="500: boom"):
        await collect(engine, request())
    assert len(server.requests) == 2 and engine.num_unfinished_requests() == 0


async def test_malformed_streams_are_protocol_errors(stub: tuple[StubServer, RemoteEngine]) -> None:
    server, engine = stub
    server.reply = lambda body: stream(chunk("a"), "{not json")
    with pytest.raises(RemoteProtocolError, match="not JSON"):
        await collect(engine, request())
    server.reply = lambda body: stream(chunk("a"), "[DONE]")  # never finishes
    with pytest.raises(RemoteProtocolError, match="without a finish_reason"):
        await collect(engine, request())
    server.reply = lambda body: PlainTextResponse("hello")
    with pytest.raises(RemoteProtocolError, match="text/event-stream"):
        await collect(engine, request())
    server.reply = lambda body: stream({"error": {"message": "engine died"}})
    with pytest.raises(GenerationError, match="engine died"):
        await collect(engine, request())
    assert engine.num_unfinished_requests() == 0


async def test_a_silent_server_times_out(stub: tuple[StubServer, RemoteEngine]) -> None:
    server, engine = stub
    server.reply = lambda body: stream(chunk("a"), chunk("b"), pause_s=3.0)
    started = time.perf_counter()
    with pytest.raises(RemoteTimeoutError):
        await collect(engine, request())
    assert 0.9 < time.perf_counter() - started < 2.5  # the 1 s read timeout, not the server's 3 s pause


async def test_abort_from_outside_closes_the_stream(stub: tuple[StubServer, RemoteEngine]) -> None:
    server, engine = stub
    server.reply = lambda body: stream(*(chunk(f"w{i} ", token_ids=[i]) for i in range(1000)), pause_s=0.02)
    req = request()
    deltas: list[Any] = []
    three = asyncio.Event()

    async def consume() -> None:
        async for delta in engine.generate(req):
            deltas.append(delta)
            if len(deltas) == 3:
                three.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(three.wait(), 5)
    assert engine.num_unfinished_requests() == 1
    await engine.abort(req.request_id)
    await asyncio.wait_for(task, 5)
    assert deltas[-1].finish_reason == "cancelled" and deltas[-1].usage.completion_tokens == len(deltas) - 1
    await asyncio.wait_for(server.disconnected.wait(), 5)  # the server saw the client go
    assert engine.num_unfinished_requests() == 0


class CountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return await super().handle_async_request(request)


async def test_only_connecting_is_retried_and_boundedly() -> None:
    transport = CountingTransport()
    engine = RemoteEngine(f"http://127.0.0.1:{free_port()}", model="m", connect_retries=2, transport=transport)
    with pytest.raises(RemoteConnectError, match=r"3 attempts.*OPENAI_BASE_URL"):
        await collect(engine, request())
    assert transport.attempts == 3 and engine.num_unfinished_requests() == 0
    health = await engine.health()
    assert not health.ok and "cannot connect" in health.detail
    await engine.aclose()
    await engine.aclose()  # idempotent


async def test_health_falls_back_to_the_model_list(stub: tuple[StubServer, RemoteEngine]) -> None:
    _, engine = stub
    health = await engine.health()  # the stub has no /health: /v1/models decides
    assert health.ok and "stub" in health.detail
    other = RemoteEngine(engine.base_url, model="not-served")
    try:
        assert not (await other.health()).ok
    finally:
        await other.aclose()


def test_settings_and_registry() -> None:
    with pytest.raises(SettingsError, match="OPENAI_BASE_URL"):
        load_engine("openai")
    single = load_engine(
        "openai",
        openai_base_url="http://127.0.0.1:9/v1",
        openai_model="m",
        openai_session_header="X-Sticky",
        openai_max_attempts=1,
    )
    assert isinstance(single, RemoteEngine)
    assert (single.base_url, single.model_id, single.session_header) == ("http://127.0.0.1:9", "m", "X-Sticky")
    # several URLs (or one router with failover, the default): one remote engine per URL, replicated
    replicated = load_engine("openai", openai_base_url="http://127.0.0.1:9, http://127.0.0.1:10/v1", openai_model="m")
    assert isinstance(replicated, ReplicatedEngine) and replicated.name == "openai"
    assert [r.base_url for r in replicated.replicas.values()] == ["http://127.0.0.1:9", "http://127.0.0.1:10"]
    assert isinstance(load_engine("openai", openai_base_url="http://127.0.0.1:9"), ReplicatedEngine)
    with pytest.raises(SettingsError, match=r"OPENAI_BASE_URL.*not an http"):
        load_engine("openai", openai_base_url="http://127.0.0.1:9,127.0.0.1:10")
    assert EngineSettings(openai_api_key="secret").openai_api_key == "secret"
    assert "secret" not in repr(EngineSettings(openai_api_key="secret"))


# -- against vLLM's real OpenAI server ------------------------------------------------------------------


@pytest.mark.vllm
async def settled(server: VllmServer, metric: str, *, tries: int) -> tuple[int, float]:
    """Poll until `server` runs no request and `metric` stops moving (at most `tries` polls, 0.2 s apart);
    the last running count and value."""
    value = -1.0
    for _ in range(tries):
        running = await asyncio.to_thread(server.running_requests)
        previous, value = value, await asyncio.to_thread(server.metric, metric)
        if running == 0 and value == previous:
            break
        await asyncio.sleep(0.2)
    return running, value


async def test_cancel_leaves_no_request_running_upstream(
    remote_vllm_server: VllmServer, remote_vllm_engine: ChatMLMessages, demo_tokenizer: Any
) -> None:
    engine: RemoteEngine = remote_vllm_engine.engine
    # EOS banned: left alone, the reply would run to max_tokens and count as a finished request.
    sampling = Sampling(seed=1, max_tokens=1500, logit_bias={demo_tokenizer.eos_token_id: -100.0})
    req = request(sampling=sampling)
    # The server is shared with earlier tests (a cancelled warm may still be finishing there): wait until it is
    # idle and its finished count stops moving, so the count below measures this test's request alone.
    _, finished_before = await settled(remote_vllm_server, "vllm:request_success_total", tries=50)
    generated_before = await asyncio.to_thread(remote_vllm_server.metric, "vllm:generation_tokens_total")
    got = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(engine.generate(req)) as deltas:
            async for _ in deltas:
                got.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.num_unfinished_requests() == 0
    # the server notices the disconnect, aborts the request and stops generating
    running, generated = await settled(remote_vllm_server, "vllm:generation_tokens_total", tries=100)
    assert running == 0
    # Aborted, not finished: vLLM counts no finished request and stopped well short of max_tokens.
    assert await asyncio.to_thread(remote_vllm_server.metric, "vllm:request_success_total") == finished_before
    assert 0 < generated - generated_before < sampling.max_tokens


@pytest.mark.vllm
async def test_a_wrong_key_is_a_401_from_vllm(remote_vllm_server: VllmServer) -> None:
    engine = RemoteEngine(remote_vllm_server.url, api_key="wrong", model="any")
    try:
        with pytest.raises(RemoteStatusError) as info:
            await collect(engine, request())
        assert info.value.status_code == 401
    finally:
        await engine.aclose()
    good = RemoteEngine(remote_vllm_server.url, api_key=API_KEY)
    try:
        health = await good.health()
        assert health.ok and good.model_id is None and "demo-chat" in health.detail
    finally:
        await good.aclose()
