"""`WS /ws/completions`: thinking-effort + structured-output jobs, a bounded job queue, keepalive, Fernet.

Client frames (JSON objects):
- a job: `{"request": {"messages": [...], "thinking_effort": "none|low|medium|high", "response_format": {...},
  "max_tokens": N, "sampling": {...}}, "client_request_id": "...", "timeout_seconds": 120}`
- `{"type": "cancel", "client_request_id": "..."}` (no id: every job of this connection)
- `{"type": "pong"}` (the answer to the server's ping) and `{"type": "ping"}` (answered with a pong)

Server frames: `{"type": "ping"}` every `ORCH_PING_INTERVAL_S`, and one result per job:
`{"type": "result", "client_request_id": ..., "status": "completed", "result": {...}}` or
`{"type": "result", "client_request_id": ..., "status": "error"|"timeout"|"cancelled", "error": {code, message}}`.
Keepalive is at the application level (JSON frames, which browsers can send): any client frame,
a pong included, proves the client alive; `ORCH_PONG_TIMEOUT_S` without one closes the socket (4000).

Jobs run at most `ORCH_MAX_CONCURRENT_JOBS` at once server-wide; up to `ORCH_MAX_QUEUED_JOBS` wait
(`queue_full` past that) and one connection holds at most `ORCH_MAX_JOBS_PER_CONNECTION`
(`too_many_jobs`). `timeout_seconds` covers the wait and the run. Cancel, timeout and disconnect
cancel the job's task, which closes the running pass's stream and so aborts its engine request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from yap_engines import InferenceEngine, Sampling
from yap_engines.errors import (
    ContextTooLongError,
    EngineError,
    InvalidRequestError,
    InvalidSamplingError,
    UnsupportedFeature,
)
from yap_engines.reasoning import ReasoningPipeline, ReasoningResult, structured_output_from_dict

from . import wire
from .admission import receive_within, serve_admitted
from .crypto import ContentCipher, DecryptionError
from .settings import ServerSettings

log = logging.getLogger("yap.completions")

CLOSE_NO_PONG = wire.CLOSE_IDLE
MAX_TIMEOUT_S = 3600.0


class JobError(Exception):
    """A job (or frame) refused with a wire error `code` and a `message` that says what to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[ChatMessage] = Field(min_length=1)
    thinking_effort: Literal["none", "low", "medium", "high"] = "low"
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    sampling: dict[str, Any] | None = None


class JobFrame(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["completion"] = "completion"
    request: CompletionRequest
    client_request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=200)
    timeout_seconds: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S)


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


def job_board(app: Any, settings: ServerSettings) -> JobBoard:
    """The app's `JobBoard`, built on first use and kept on `app.state`."""
    board: JobBoard | None = getattr(app.state, "completion_jobs", None)
    if board is None:
        board = JobBoard(settings.orch_max_concurrent_jobs, settings.orch_max_queued_jobs)
        app.state.completion_jobs = board
    return board


def result_frame(client_request_id: str | None, status: str, **body: Any) -> dict[str, Any]:
    return {"type": "result", "client_request_id": client_request_id, "status": status, **body}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class CompletionsConnection:
    """One accepted `/ws/completions` socket: its jobs, its keepalive and its reader loop."""

    def __init__(self, websocket: WebSocket, state: Any) -> None:
        self.ws = websocket
        self.settings: ServerSettings = state.settings
        self.engine: InferenceEngine | None = state.engines.get("chat")
        self.tokenizer: Any = state.chat_tokenizer
        self.board = job_board(websocket.app, self.settings)
        key = self.settings.orch_encryption_key
        self.cipher = ContentCipher(key.get_secret_value()) if key is not None else None
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self._send_lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                    await self.ws.send_json(message)

    async def serve(self) -> None:
        """Read frames until the client leaves or stays silent past the pong timeout."""
        pinger = asyncio.create_task(self._ping_loop(), name="completions-ping")
        try:
            while True:
                message = await receive_within(self.ws, self.settings.orch_pong_timeout_s)
                if message is None:
                    async with self._send_lock:
                        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                            await self.ws.close(CLOSE_NO_PONG, "no pong within ORCH_PONG_TIMEOUT_S")
                    return
                if message["type"] == "websocket.disconnect":
                    return
                await self.handle(message.get("text"))
        except WebSocketDisconnect:
            return
        finally:
            pinger.cancel()
            await self.cancel_jobs(list(self.jobs), notify=False)

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.orch_ping_interval_s)
            await self.send({"type": "ping"})

    async def handle(self, text: str | None) -> None:
        """Handle one frame; a bad frame gets an error result and the connection stays open."""
        client_request_id: str | None = None
        try:
            data = self._parse(text)
            kind = data.get("type", "completion")
            if kind in ("pong", "ping"):
                if kind == "ping":
                    await self.send({"type": "pong"})
                return
            if kind == "cancel":
                client_request_id = data.get("client_request_id")
                await self.on_cancel(client_request_id)
                return
            raw_id = data.get("client_request_id")
            client_request_id = raw_id if isinstance(raw_id, str) else None
            try:
                job = JobFrame.model_validate(data)
            except ValidationError as exc:
                raise JobError("invalid_request", wire.describe_errors(exc, "")) from None
            client_request_id = job.client_request_id
            self.start_job(job)
        except JobError as exc:
            await self.send(result_frame(client_request_id, "error", **error_body(exc.code, exc.message)))

    def _parse(self, text: str | None) -> dict[str, Any]:
        if text is None:
            raise JobError("invalid_message", "binary frames are not supported; send JSON text")
        limit = self.settings.ws_max_message_bytes
        if (size := wire.oversize_bytes(text, limit)) is not None:
            raise JobError("message_too_large", f"frame is {size} bytes; the limit is {limit}")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise JobError("invalid_message", f"frame is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise JobError("invalid_message", "frame must be a JSON object")
        if data.get("type", "completion") not in ("completion", "cancel", "ping", "pong"):
            raise JobError("unknown_type", f"unknown type {data.get('type')!r}; use completion, cancel, ping or pong")
        return data

    # -- jobs --------------------------------------------------------------------------------------
    def start_job(self, job: JobFrame) -> None:
        rid = job.client_request_id
        if rid in self.jobs:
            raise JobError("duplicate_request_id", f"job {rid!r} is still running; use a fresh client_request_id")
        if self.engine is None or self.tokenizer is None:
            raise JobError("not_deployed", "/ws/completions needs the chat model, which this server does not deploy")
        if len(self.jobs) >= self.settings.orch_max_jobs_per_connection:
            raise JobError(
                "too_many_jobs",
                f"this connection already has {len(self.jobs)} jobs (ORCH_MAX_JOBS_PER_CONNECTION); "
                "wait for a result or cancel one",
            )
        messages = self._messages(job.request)
        pipeline = self._pipeline(job.request)
        response_format = self._response_format(job.request)
        ticket = self.board.admit()
        if ticket is None:
            raise JobError(
                "queue_full",
                f"the server is running {self.board.running} jobs with {self.board.queued} queued "
                "(ORCH_MAX_CONCURRENT_JOBS, ORCH_MAX_QUEUED_JOBS); retry with backoff",
            )
        timeout = job.timeout_seconds or self.settings.orch_default_timeout_s
        coro = self._run(rid, ticket, pipeline, messages, job.request, response_format, timeout)
        task = asyncio.create_task(coro, name=f"completion-{rid}")
        # A task cancelled before its first step never runs its body: give its queue place back here.
        task.add_done_callback(lambda _: ticket.leave_queue())
        self.jobs[rid] = task

    def _messages(self, request: CompletionRequest) -> list[dict[str, str]]:
        messages = []
        for i, message in enumerate(request.messages):
            content = message.content
            if self.cipher is not None:
                try:
                    content = self.cipher.decrypt(content, f"messages[{i}].content")
                except DecryptionError as exc:
                    raise JobError("decryption_failed", str(exc)) from None
            messages.append({"role": message.role, "content": content})
        return messages

    def _pipeline(self, request: CompletionRequest) -> ReasoningPipeline:
        s = self.settings
        base = Sampling(
            temperature=s.chat_temperature, top_p=s.chat_top_p, top_k=s.chat_top_k,
            repetition_penalty=s.chat_repetition_penalty,
        )  # fmt: skip
        try:
            sampling = base.merged(request.sampling or {})
        except InvalidSamplingError as exc:
            raise JobError("invalid_sampling", str(exc)) from None
        return ReasoningPipeline(
            self.engine,  # type: ignore[arg-type]
            self.tokenizer,
            budgets=s.thinking_budgets,
            final_max_tokens=s.final_max_tokens,
            sampling=sampling,
        )

    @staticmethod
    def _response_format(request: CompletionRequest) -> Any:
        try:
            return structured_output_from_dict(request.response_format)
        except InvalidRequestError as exc:
            raise JobError("invalid_request", f"response_format: {exc}") from None

    async def _run(
        self,
        rid: str,
        ticket: QueueTicket,
        pipeline: ReasoningPipeline,
        messages: list[dict[str, str]],
        request: CompletionRequest,
        response_format: Any,
        timeout_s: float,
    ) -> None:
        started = time.monotonic()
        status, tokens, body = "error", 0, error_body("internal_error", "the job failed; it has been logged")
        try:
            async with asyncio.timeout(timeout_s):
                async with self.board.slot(ticket):
                    result = await pipeline.run(
                        messages, request.thinking_effort, response_format, request_id=f"{rid}-{uuid.uuid4().hex[:8]}",
                        max_tokens=request.max_tokens,
                    )  # fmt: skip
            status, tokens, body = "completed", result.usage.completion_tokens, {"result": self._result(result)}
        except TimeoutError:
            status, body = "timeout", error_body("timeout", f"the job ran past timeout_seconds={timeout_s:g}")
        except InvalidRequestError as exc:
            body = error_body(_request_error_code(exc), str(exc))
        except EngineError as exc:
            body = error_body("engine_error", f"the engine failed this job: {exc}")
        except Exception:
            log.exception("completion job %s failed", rid)
        except asyncio.CancelledError:
            self.board.record("cancelled", time.monotonic() - started, 0)
            raise
        finally:
            self.jobs.pop(rid, None)
        self.board.record(status, time.monotonic() - started, tokens)
        await self.send(result_frame(rid, status, **body))

    def _result(self, result: ReasoningResult) -> dict[str, Any]:
        content, thinking = result.content, result.thinking
        if self.cipher is not None:
            content, thinking = self.cipher.encrypt(content), self.cipher.encrypt(thinking)
        usage = result.usage
        message = {"role": "assistant", "content": content, "thinking": thinking}
        return {
            "choices": [{"index": 0, "message": message, "finish_reason": result.finish_reason}],
            "usage": {
                **usage.as_dict(),
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                "passes": [p.as_dict() for p in result.passes],
            },
            "model": getattr(self.engine, "model_id", None),
            "thinking_budget": result.thinking_budget,
            "encrypted": self.cipher is not None,
        }

    async def on_cancel(self, client_request_id: Any) -> None:
        if client_request_id is None:
            await self.cancel_jobs(list(self.jobs))
            return
        if not isinstance(client_request_id, str) or client_request_id not in self.jobs:
            raise JobError("unknown_job", f"no running job {client_request_id!r} on this connection")
        await self.cancel_jobs([client_request_id])

    async def cancel_jobs(self, ids: list[str], *, notify: bool = True) -> None:
        """Cancel these jobs (aborting their engine requests) and wait until they have stopped."""
        tasks = {rid: task for rid in ids if (task := self.jobs.get(rid)) is not None and not task.done()}
        for task in tasks.values():
            task.cancel()
        if tasks:
            await asyncio.wait(tasks.values())  # not gather: that would re-raise their CancelledError here
        for rid, task in tasks.items():
            if notify and task.cancelled():
                body = error_body("cancelled", "cancelled by the client")
                await self.send(result_frame(rid, "cancelled", **body))


def _request_error_code(exc: InvalidRequestError) -> str:
    if isinstance(exc, ContextTooLongError):
        return "context_too_long"
    if isinstance(exc, InvalidSamplingError):
        return "invalid_sampling"
    if isinstance(exc, UnsupportedFeature):
        return "unsupported"
    return "invalid_request"


async def completions_endpoint(websocket: WebSocket) -> None:
    """`WS /ws/completions`: authenticate, take a connection slot (or refuse), then serve jobs."""
    await serve_admitted(
        websocket,
        lambda code, message: result_frame(None, "error", **error_body(code, message)),
        lambda: CompletionsConnection(websocket, websocket.state).serve(),
    )
