"""The server-wide job slots and queue of `/ws/completions`, and the recent history the dashboard reads.

One `JobBoard` per app, built by the lifespan (`AppState.jobs`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator


class JobBoard:
    """Server-wide job slots and the recent history that the dashboard reads (one per app)."""

    def __init__(self, max_running: int, max_queued: int, history: int = 1000) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self._slots = asyncio.Semaphore(max_running)
        self.running = 0
        self.queued = 0
        self.finished: deque[tuple[float, str, float, int]] = deque(maxlen=history)  # (at, status, s, tokens)

    def admit(self) -> QueueTicket | None:
        """Reserve a place in the queue; None when running and queued jobs are at their limits."""
        if self.running + self.queued >= self.max_running + self.max_queued:
            return None
        self.queued += 1
        return QueueTicket(self)

    @contextlib.asynccontextmanager
    async def slot(self, ticket: QueueTicket) -> AsyncIterator[None]:
        """Wait for a run slot; the ticket's queue place is given back either way."""
        try:
            await self._slots.acquire()
        finally:
            ticket.leave_queue()
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()

    def record(self, status: str, seconds: float, completion_tokens: int) -> None:
        self.finished.append((time.monotonic(), status, seconds, completion_tokens))


class QueueTicket:
    """A job's place in the queue; given back once, when it gets a slot or ends without one."""

    def __init__(self, board: JobBoard) -> None:
        self._board: JobBoard | None = board

    def leave_queue(self) -> None:
        if self._board is not None:
            self._board.queued -= 1
            self._board = None
