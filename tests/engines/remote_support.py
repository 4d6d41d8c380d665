"""Support for testing the remote (`openai`) engine: a real vLLM OpenAI server process, a scripted
chat-completions stub on loopback, and a wrapper that lets the token-id conformance suite drive a
chat endpoint."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from yap_cli.loopback import free_port
from yap_engines import ChatRequest, Delta, EngineHealth
from yap_engines.protocol import PrefillResult

API_KEY = "remote-test-key"
_CHATML = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n", re.S)


@dataclass
class VllmServer:
    """A running `python -m vllm.entrypoints.openai.api_server` on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str) -> float:
        """The sum of one metric's samples (every label set) in the server's Prometheus text."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        values = [
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith((f"{name}{{", f"{name} "))
        ]
        assert values, f"{name} is missing from /metrics"
        return sum(values)

    def running_requests(self) -> float:
        """`vllm:num_requests_running`: requests the engine is generating for now."""
        return self.metric("vllm:num_requests_running")


def start_vllm_server(model_dir: Path, log: Path, deadline_s: float = 300) -> VllmServer:
    """Start vLLM's OpenAI server on the demo model (CPU build), wait for /health, return it."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "2048", "--max-num-seqs", "8", "--enforce-eager",
        "--enable-prompt-tokens-details", "--api-key", API_KEY,
        # compact JSON, as the in-process engine is configured (a random model pads JSON with whitespace)
        "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = VllmServer(process, port, log)
    stop_at = time.monotonic() + deadline_s
    while time.monotonic() < stop_at:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM's OpenAI server exited during start-up:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop_vllm_server(server)
    raise RuntimeError(f"vLLM's OpenAI server was not healthy within {deadline_s} s")


def stop_vllm_server(server: VllmServer) -> None:
    """SIGTERM the server's process group (the API server and its engine core), by the pid started."""
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)


class ChatMLMessages:
    """Drives a chat-API engine with the suite's token-id requests.

    The suite renders prompts with the demo tokenizer (a ChatML template); this recovers the
    messages those ids were rendered from and sends them, so the server renders the same prompt.
    Everything else is the wrapped engine's own behaviour.
    """

    def __init__(self, engine: Any, tokenizer: Any) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.name = engine.name

    def messages(self, ids: tuple[int, ...]) -> list[dict[str, str]]:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=False)
        found = [{"role": role, "content": content} for role, content in _CHATML.findall(text)]
        assert found, f"not a ChatML prompt: {text[:120]!r}"
        return found

    def generate(self, request: ChatRequest) -> AsyncIterator[Delta]:
        messages = self.messages(tuple(request.prompt_token_ids))
        return self.engine.generate(
            ChatRequest(
                request.request_id,
                request.prompt_token_ids,
                request.sampling,
                request.structured_output,
                request.session_id,
                messages,
            )
        )

    async def prefill(self, request: ChatRequest) -> PrefillResult:
        messages = list(request.messages) or self.messages(tuple(request.prompt_token_ids))
        result: PrefillResult = await self.engine.prefill(dataclasses.replace(request, messages=messages))
        return result

    async def abort(self, request_id: str) -> None:
        await self.engine.abort(request_id)

    async def health(self) -> EngineHealth:
        health: EngineHealth = await self.engine.health()
        return health

    async def aclose(self) -> None:
        await self.engine.aclose()

    def num_unfinished_requests(self) -> int:
        return int(self.engine.num_unfinished_requests())


# -- a scripted chat-completions server ---------------------------------------------------------------


def sse(*events: Any) -> bytes:
    """SSE bytes: dicts become JSON `data:` events, strings are sent as they are."""
    out = []
    for event in events:
        out.append(f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n")
    return "".join(out).encode()


def chunk(
    content: str | None = None, *, finish: str | None = None, token_ids: list[int] | None = None, **delta: Any
) -> dict[str, Any]:
    """A `chat.completion.chunk` event (vLLM puts `token_ids` on the choice)."""
    if content is not None:
        delta["content"] = content
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
    if token_ids is not None:
        choice["token_ids"] = token_ids
    return {"object": "chat.completion.chunk", "model": "stub", "choices": [choice]}


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "model": "stub",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }


Reply = Callable[[dict[str, Any]], AsyncIterator[bytes] | Response]


@dataclass
class StubServer:
    """A chat-completions server whose answer is a scripted coroutine; it records what it received."""

    reply: Reply | None = None
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.requests.append(({**request.headers, ":path": request.url.path}, body))
            assert self.reply is not None
            answer = self.reply(body)
            if isinstance(answer, Response):
                return answer
            return StreamingResponse(self._watch(answer), media_type="text/event-stream")

        async def models(request: Request) -> JSONResponse:
            return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model"}]})

        routes = [Route(path, chat, methods=["POST"]) for path in ("/v1/chat/completions", "/v1/completions")]
        return Starlette(routes=[*routes, Route("/v1/models", models)])

    async def _watch(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for piece in body:
                yield piece
        finally:
            self.disconnected.set()
