"""Helpers for the embedded-default tests: an engine wrapper that keeps what the engine received."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

from yap_engines import ChatRequest, Delta, EngineHealth

KEY = "test-key"
REPLY_TIMEOUT_S = 120  # longest wait for one frame; SmolLM2 on two shared CPU cores can be slow


class RecordingEngine:
    """Delegates to a real engine and keeps every `ChatRequest` it was asked to generate.

    The wrapped engine belongs to the caller: `aclose` here does not close it.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.name = engine.name
        self.requests: list[ChatRequest] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def generate(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        self.requests.append(request)
        return self._engine.generate(request)  # type: ignore[no-any-return]

    async def abort(self, request_id: str) -> None:
        await self._engine.abort(request_id)

    async def health(self) -> EngineHealth:
        return await self._engine.health()  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        return None


class WsTalker:
    """A `/ws` client for tests: frames out, frames in, and whole turns."""

    def __init__(self, connection: Any, session_id: str = "s1") -> None:
        self.connection = connection
        self.session_id = session_id

    async def send(self, kind: str, rid: str, **payload: Any) -> None:
        frame = {"type": kind, "session_id": self.session_id, "request_id": rid, "payload": payload}
        await self.connection.send(json.dumps(frame))

    async def recv(self) -> dict[str, Any]:
        return dict(json.loads(await asyncio.wait_for(self.connection.recv(), REPLY_TIMEOUT_S)))

    async def start(self, persona: str) -> dict[str, Any]:
        await self.send("start", "start", chat_prompt=persona)
        frame = await self.recv()
        assert frame["type"] == "ack", frame
        return frame

    async def until_terminal(self, rid: str) -> list[dict[str, Any]]:
        frames = []
        while True:
            frame = await self.recv()
            if frame.get("request_id") != rid:
                continue
            frames.append(frame)
            if frame["type"] in ("done", "cancelled", "error"):
                return frames

    async def turn(self, rid: str, utterance: str, **sampling: Any) -> dict[str, Any]:
        """Send a message and return its terminal frame."""
        await self.send("message", rid, user_utterance=utterance, sampling=sampling)
        return (await self.until_terminal(rid))[-1]
