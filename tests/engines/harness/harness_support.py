"""Harness test support: Yap's own server on loopback over a scripted thinking engine, and a malformed stub."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from yap_cli.loopback import serve_on_loopback
from yap_engines import ChatRequest, EngineSettings, FakeEngine, FunctionEngine
from yap_server.app import create_app
from yap_server.settings import ServerSettings

KEY = "harness-key"
REPO = Path(__file__).resolve().parents[3]


CAPPED_MAX_OUT = 150  # the seed's CHAT_MAX_OUT default


def settings() -> ServerSettings:
    return ServerSettings(text_api_key=KEY, max_concurrent_connections=8, deploy_mode="chat")


def budget(chat_max_out: int = 4096) -> EngineSettings:
    """The model's output cap (`CHAT_MAX_OUT` belongs to `EngineSettings`)."""
    return EngineSettings(chat_max_out=chat_max_out)


@dataclass
class ThinkingScript:
    """A thinking model: each reply is `<think>plan N</think>Answer N.`; it keeps every prompt it was given."""

    prompts: list[str] = field(default_factory=list)
    engine: FunctionEngine = field(init=False)

    def __post_init__(self) -> None:
        self.engine = FunctionEngine(self.reply)

    async def reply(self, request: ChatRequest) -> AsyncIterator[str]:
        prompt = self.engine.tokenizer.decode(request.prompt_token_ids)
        self.prompts.append(prompt)
        turn = len(self.prompts)
        question = prompt.rsplit("<|im_start|>user", 1)[-1]  # the newest user turn
        if "THINK FOREVER" in question:
            for i in range(10_000):
                yield ("<think>" if i == 0 else "") + f" secret{i}"
            return
        if "NO OPENING TAG" in question:
            for piece in (" reasoned", " quietly", "</think>", "Final", " word."):
                yield piece
            return
        for piece in ("<think>", f"plan{turn}", " hidden", "</think>", "Answer", f" {turn}."):
            yield piece


@dataclass
class YapTarget:
    url: str
    script: ThinkingScript
    slow: FakeEngine | None = None


@pytest.fixture
async def yap() -> AsyncIterator[YapTarget]:
    """Yap's server (its /v1/chat/completions) on 127.0.0.1 over the thinking script."""
    script = ThinkingScript()
    app = create_app(settings(), engines={"chat": script.engine}, engine_settings=budget())
    async with serve_on_loopback(app) as port:
        yield YapTarget(f"http://127.0.0.1:{port}", script)
    assert script.engine.num_unfinished_requests() == 0


@pytest.fixture
async def capped_yap() -> AsyncIterator[YapTarget]:
    """Yap's server over the thinking script with the seed's default output cap (CHAT_MAX_OUT=150)."""
    script = ThinkingScript()
    app = create_app(settings(), engines={"chat": script.engine}, engine_settings=budget(CAPPED_MAX_OUT))
    async with serve_on_loopback(app) as port:
        yield YapTarget(f"http://127.0.0.1:{port}", script)


@pytest.fixture
async def slow_yap() -> AsyncIterator[YapTarget]:
    """Yap's server over a fake engine that waits 5 s before its first token."""
    engine = FakeEngine(text="late reply", first_token_delay_s=5.0)
    async with serve_on_loopback(create_app(settings(), engines={"chat": engine}, engine_settings=budget())) as port:
        yield YapTarget(f"http://127.0.0.1:{port}", ThinkingScript(), engine)


@pytest.fixture
async def malformed_stub() -> AsyncIterator[str]:
    """A chat-completions endpoint that answers 200 with an SSE stream whose events are not JSON."""

    async def chat(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
            yield b"data: {this is not json\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "stub"}]})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])
    async with serve_on_loopback(app) as port:
        yield f"http://127.0.0.1:{port}"


async def yap_cli(*args: str, env: dict[str, str] | None = None, limit_s: float = 120) -> tuple[int, str, str]:
    """Run the `yap` command in a subprocess without blocking this event loop (servers run in it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "yap_cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})}, cwd=REPO,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), limit_s)
    return int(process.returncode or 0), out.decode(), err.decode()


def fields(record: dict[str, Any]) -> dict[str, Any]:
    """The shape of a result: its keys, and the keys of its nested objects."""
    return {k: sorted(v) if isinstance(v, dict) and k != "sampling" else None for k, v in record.items()}
