"""`WS /ws/completions`: thinking-effort + structured-output jobs, a bounded job queue, keepalive, Fernet.

Client frames (JSON objects):
- a job, seed 002's request shape: `{"request": {"model": "...", "messages": [...], "thinking_effort":
  "none|low|medium|high", "response_format": {...}, "max_tokens": N, "sampling": {...}}, "client_request_id": "...",
  "timeout_seconds": 120}`. `model` is optional; when given it must name a served model (`GET /v1/models`:
  `SERVED_MODEL_NAME`, else the chat model's id), as seed 002's vLLM checked it; else `model_not_found`.
- `{"type": "cancel", "client_request_id": "..."}` (no id: every job of this connection)
- `{"type": "pong"}` (the answer to the server's ping) and `{"type": "ping"}` (answered with a pong)

Server frames: `{"type": "ping"}` every `ORCH_PING_INTERVAL_S`, and one result per job, in seed 002's shapes
(its keys, plus `type`, `client_request_id` and the error's `code`):
`{"type": "result", "client_request_id": ..., "status": "completed", "result": {...}}` or
`{"type": "result", "client_request_id": ..., "status": "error"|"timeout"|"cancelled", "error": "<message>",
"code": "<code>"}` (`error` is the message string seed 002's clients show; `code` the machine-readable reason).
Keepalive is at the application level (JSON frames, which browsers can send): any client frame,
a pong included, proves the client alive; `ORCH_PONG_TIMEOUT_S` without one closes the socket (4000).

It runs on the shared WebSocket runtime (`connection.py`): a job is the connection's `Work`, and
every pass of its thinking-effort pipeline streams through the server's generation pipeline.
Jobs run at most `ORCH_MAX_CONCURRENT_JOBS` at once server-wide; up to `ORCH_MAX_QUEUED_JOBS` wait
(`queue_full` past that) and one connection holds at most `ORCH_MAX_JOBS_PER_CONNECTION`
(`too_many_jobs`). `timeout_seconds` covers the wait and the run. Cancel, timeout and disconnect
cancel the job's task, which closes the running pass's stream and so aborts its engine request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocket

from yap_engines import ChatRequest, InferenceEngine
from yap_engines.errors import EngineError, InvalidRequestError, InvalidSamplingError
from yap_engines.protocol import OnDelta
from yap_engines.reasoning import ReasoningPipeline, ReasoningResult, structured_output_from_dict
from yap_engines.thinking import ThinkSplit

from .. import frames
from ..connection import Connection, Terminal, serve_websocket
from ..crypto import DecryptionError
from ..frames import WireError
from ..jobs import QueueTicket
from ..quotas import QuotaGate
from ..streaming import Failure, Generation, failure_for
from ..telemetry import TurnTelemetry

log = logging.getLogger("yap.completions")

MAX_TIMEOUT_S = 3600.0


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None  # seed 002's clients send it; checked against the served models
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


def result_frame(client_request_id: str | None, status: str, **body: Any) -> dict[str, Any]:
    return {"type": "result", "client_request_id": client_request_id, "status": status, **body}


def error_body(code: str, message: str) -> dict[str, Any]:
    """A failed job's or refused frame's fields, seed 002's shape: `error` is the message, `code` the reason."""
    return {"error": message, "code": code}


class CompletionsRoute:
    """One `/ws/completions` socket: its jobs and its keepalive."""

    json_error_code = "invalid_message"
    idle_reason = "no pong within ORCH_PONG_TIMEOUT_S"

    def __init__(self, connection: Connection) -> None:
        self.conn = connection
        self.app = app = connection.app
        self.settings = settings = app.settings
        self.max_message_bytes = settings.ws_max_message_bytes
        self.idle_timeout_s = settings.orch_pong_timeout_s
        connection.spawn(self._ping_loop(), "completions-ping")

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.orch_ping_interval_s)
            await self.conn.send({"type": "ping"})

    # -- what the runtime asks of a route ------------------------------------------------------
    def error_frame(self, code: str, message: str, extra: dict[str, Any], raw: dict[str, Any] | None) -> Any:
        rid = raw.get("client_request_id") if raw is not None else None
        return result_frame(rid if isinstance(rid, str) else None, "error", **error_body(code, message))

    def sentinel(self, text: str) -> dict[str, Any] | None:
        return None

    async def handle(self, data: dict[str, Any]) -> bool:
        kind = data.get("type", "completion")
        if kind not in ("completion", "cancel", "ping", "pong"):
            raise WireError("unknown_type", f"unknown type {kind!r}; use completion, cancel, ping or pong")
        if kind == "ping":
            await self.conn.send({"type": "pong"})
        elif kind == "cancel":
            await self.on_cancel(data.get("client_request_id"))
        elif kind == "completion":
            try:
                job = JobFrame.model_validate(data)
            except ValidationError as exc:
                raise WireError("invalid_request", frames.describe_errors(exc, "")) from None
            self.start_job(job)
        return True

    # -- jobs --------------------------------------------------------------------------------------
    def start_job(self, job: JobFrame) -> None:
        rid, app = job.client_request_id, self.app
        if rid in self.conn.work:
            raise WireError("duplicate_request_id", f"job {rid!r} is still running; use a fresh client_request_id")
        if app.chat is None:
            raise WireError(
                "not_deployed",
                "/ws/completions needs the chat model, which this server does not deploy "
                f"(DEPLOY_MODE={self.settings.deploy_mode}); serve it with DEPLOY_MODE=chat or both",
            )
        if len(self.conn.work) >= self.settings.orch_max_jobs_per_connection:
            raise WireError(
                "too_many_jobs",
                f"this connection already has {len(self.conn.work)} jobs (ORCH_MAX_JOBS_PER_CONNECTION); "
                "wait for a result or cancel one",
            )
        self._check_model(job.request.model)
        messages = self._messages(job.request)
        telemetry = self.conn.observed.turn(rid)
        passes = Passes(app.chat, telemetry, self.conn.quota)
        pipeline = self._pipeline(app.chat, job, passes)
        response_format = self._response_format(job.request)
        ticket = app.jobs.admit()
        if ticket is None:
            raise WireError(
                "queue_full",
                f"the server is running {app.jobs.running} jobs with {app.jobs.queued} queued "
                "(ORCH_MAX_CONCURRENT_JOBS, ORCH_MAX_QUEUED_JOBS); retry with backoff",
            )
        timeout = job.timeout_seconds or self.settings.orch_default_timeout_s
        work = Job(self, rid, ticket, pipeline, passes, messages, job.request, response_format, timeout, telemetry)
        self.conn.start(rid, work)

    def _check_model(self, model: str | None) -> None:
        """seed 002 passed `request.model` to its vLLM, which refused a model it did not serve: so does this."""
        served = self.app.served_models
        if model is not None and model not in served:
            raise WireError(
                "model_not_found",
                f"request.model {model!r} is not served here; use one of: {', '.join(served)} "
                "(see GET /v1/models), or leave request.model out",
            )

    def _messages(self, request: CompletionRequest) -> list[dict[str, str]]:
        messages = []
        cipher = self.app.cipher
        for i, message in enumerate(request.messages):
            content = message.content
            if cipher is not None:
                try:
                    content = cipher.decrypt(content, f"messages[{i}].content")
                except DecryptionError as exc:
                    raise WireError("decryption_failed", str(exc)) from None
            messages.append({"role": message.role, "content": content})
        return messages

    def _pipeline(self, chat: InferenceEngine, job: JobFrame, passes: Passes) -> ReasoningPipeline:
        """The thinking-effort pipeline on the app's base sampling (banned phrases included); each of
        its passes streams through the server's generation pipeline."""
        s = self.settings
        base = dataclasses.replace(self.app.sampling, max_tokens_limit=None)  # each pass sets its own cap
        try:
            sampling = base.merged(job.request.sampling or {})
        except InvalidSamplingError as exc:
            raise WireError("invalid_sampling", str(exc)) from None
        return ReasoningPipeline(
            chat,
            self.app.tokenizer,
            budgets=s.thinking_budgets,
            final_max_tokens=s.final_max_tokens,
            sampling=sampling,
            runner=passes,
        )

    @staticmethod
    def _response_format(request: CompletionRequest) -> Any:
        try:
            return structured_output_from_dict(request.response_format)
        except InvalidRequestError as exc:
            raise WireError("invalid_request", f"response_format: {exc}") from None

    async def on_cancel(self, client_request_id: Any) -> None:
        if client_request_id is None:
            await self.conn.cancel(None, "client_request")
            return
        if not isinstance(client_request_id, str) or client_request_id not in self.conn.work:
            raise WireError("unknown_job", f"no running job {client_request_id!r} on this connection")
        await self.conn.cancel([client_request_id], "client_request")

    def result(self, result: ReasoningResult) -> dict[str, Any]:
        content, thinking = result.content, result.thinking
        cipher = self.app.cipher
        if cipher is not None:
            content, thinking = cipher.encrypt(content), cipher.encrypt(thinking)
        usage = result.usage
        message = {"role": "assistant", "content": content, "thinking": thinking}
        return {
            "choices": [{"index": 0, "message": message, "finish_reason": result.finish_reason}],
            "usage": {
                **usage.as_dict(),
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                "passes": [p.as_dict() for p in result.passes],
            },
            "model": self.app.model_id,
            "thinking_budget": result.thinking_budget,
            "encrypted": cipher is not None,
        }


class _PassSink:
    """Passes collect their text through their delta callback; nothing is streamed to the client."""

    async def emit(self, piece: ThinkSplit) -> bool:
        return True


class Passes:
    """A job's pass runner: each thinking-effort pass streams through the server's generation pipeline.

    A pass returns the engine error that ended it (the reasoning pipeline stops there), and `failure`
    keeps that error as the generation pipeline mapped it, so the job reports it without mapping it again."""

    def __init__(self, chat: InferenceEngine, telemetry: TurnTelemetry, gate: QuotaGate | None = None) -> None:
        self.chat, self.telemetry, self.gate = chat, telemetry, gate
        self.failure: Failure | None = None

    async def __call__(self, request: ChatRequest, on_delta: OnDelta) -> EngineError | None:
        generation = Generation.for_prompt(self.chat, request, None, self.telemetry, observe=on_delta, gate=self.gate)
        await generation.run(_PassSink())
        self.failure = generation.failure
        return generation.error


class Job:
    """One completion job: waits for a run slot, runs the thinking-effort pipeline, sends one result."""

    def __init__(
        self,
        route: CompletionsRoute,
        rid: str,
        ticket: QueueTicket,
        pipeline: ReasoningPipeline,
        passes: Passes,
        messages: list[dict[str, str]],
        request: CompletionRequest,
        response_format: Any,
        timeout_s: float,
        telemetry: TurnTelemetry,
    ) -> None:
        self.route, self.rid, self.ticket, self.pipeline, self.passes = route, rid, ticket, pipeline, passes
        self.telemetry = telemetry
        self.messages, self.request, self.response_format, self.timeout_s = (
            messages,
            request,
            response_format,
            timeout_s,
        )
        self.started = time.monotonic()
        self.terminal = Terminal()

    async def _result(self, status: str, tokens: int, body: dict[str, Any]) -> None:
        if not self.terminal.claim():
            return
        error = body.get("error")
        self.telemetry.ended("done" if status == "completed" else "error", body.get("code") if error else None)
        self.route.app.jobs.record(status, time.monotonic() - self.started, tokens)
        await self.route.conn.send(result_frame(self.rid, status, **body))

    async def run(self) -> None:
        board = self.route.app.jobs
        try:
            async with asyncio.timeout(self.timeout_s):
                async with board.slot(self.ticket):
                    result = await self.pipeline.run(
                        self.messages, self.request.thinking_effort, self.response_format,
                        request_id=f"{self.rid}-{uuid.uuid4().hex[:8]}", max_tokens=self.request.max_tokens,
                    )  # fmt: skip
        except TimeoutError:
            body = error_body("timeout", f"the job ran past timeout_seconds={self.timeout_s:g}")
            await self._result("timeout", 0, body)
        except EngineError as exc:  # a pass's failure is already mapped; the pipeline's own errors are not
            failure = self.passes.failure or failure_for(exc)
            await self._result("error", 0, {**error_body(failure.code, failure.message), **failure.extra})
        else:
            await self._result("completed", result.usage.completion_tokens, {"result": self.route.result(result)})
        finally:
            self.ticket.leave_queue()  # a task cancelled before its first step never entered the slot

    async def stopped(self, reason: str, notify: bool) -> bool:
        self.ticket.leave_queue()
        if not self.terminal.claim():
            return False
        self.telemetry.ended("cancelled")
        self.route.app.jobs.record("cancelled", time.monotonic() - self.started, 0)
        if notify:
            await self.route.conn.send(
                result_frame(self.rid, "cancelled", **error_body("cancelled", "cancelled by the client"))
            )
        return True

    async def crashed(self, exc: Exception) -> None:
        if not self.terminal.sent:
            await self._result("error", 0, error_body("internal_error", "the job failed; it has been logged"))


async def completions_endpoint(websocket: WebSocket) -> None:
    """`WS /ws/completions`: authenticate, take a connection slot (or refuse), then serve jobs."""
    await serve_websocket(
        websocket, lambda code, message: result_frame(None, "error", **error_body(code, message)), CompletionsRoute
    )
