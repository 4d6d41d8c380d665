"""The OpenAI chat-completions wire format for `RemoteEngine`: request bodies, SSE parsing, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import GenerationError, InvalidRequestError
from ..types import ChatRequest, Delta, FinishReason, StructuredOutput, Usage

FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "abort": "cancelled",
    "cancelled": "cancelled",
    "error": "error",
}
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"  # a raw token prompt (a turn resumed from the tokens it streamed)


def request_path(request: ChatRequest) -> str:
    """Chat messages go to the chat endpoint; a request with token ids only is a raw token prompt."""
    return CHAT_PATH if request.messages else COMPLETIONS_PATH


class RemoteStatusError(GenerationError):
    """The server answered with a non-2xx status; `status_code` and the server's message are kept."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class RemoteTimeoutError(GenerationError, TimeoutError):
    """The server went silent for longer than the read timeout (or a connection timed out)."""


class RemoteProtocolError(GenerationError):
    """The answer is not a chat-completions SSE stream (bad JSON, missing fields, no end)."""


class RemoteConnectError(GenerationError):
    """No connection to the server could be opened, after the configured retries."""


@dataclass(frozen=True)
class RemoteDelta(Delta):
    """A `Delta` with the server's own reasoning/answer split of this chunk (the text holds both)."""

    reasoning: str = ""
    content: str = ""


@dataclass(frozen=True)
class Chunk:
    reasoning: str
    content: str
    token_ids: tuple[int, ...]
    finish: str | None
    usage: dict[str, Any] | None


def _structured_fields(spec: StructuredOutput) -> dict[str, Any]:
    if spec.kind == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": spec.spec}}}
    if spec.kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    value = list(spec.spec) if spec.kind == "choice" else spec.spec
    return {"structured_outputs": {spec.kind: value}}


def request_body(request: ChatRequest, model: str, *, return_token_ids: bool) -> dict[str, Any]:
    """The JSON body for `request` (streaming, usage included): `POST /v1/chat/completions` with its
    messages, or, for a request with token ids only, `POST /v1/completions` with the ids as a raw token
    prompt (`prompt: [ids]`, which vLLM and Yap accept): how a turn resumes on another replica."""
    if not request.messages and not request.prompt_token_ids:
        raise InvalidRequestError("the openai engine needs chat messages or prompt token ids")
    s = request.sampling
    prompt: dict[str, Any] = (
        {"messages": [dict(m) for m in request.messages]}
        if request.messages
        else {"prompt": list(request.prompt_token_ids)}
    )
    body: dict[str, Any] = {
        "model": model,
        **prompt,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_tokens": s.max_tokens,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
    }
    if s.stop:
        body["stop"] = list(s.stop)
    if s.seed is not None:
        body["seed"] = s.seed
    if s.logit_bias:
        body["logit_bias"] = {str(token): bias for token, bias in s.logit_bias.items()}
    if s.top_k != -1:
        body["top_k"] = s.top_k
    if s.min_p:
        body["min_p"] = s.min_p
    if s.repetition_penalty != 1.0:
        body["repetition_penalty"] = s.repetition_penalty
    if return_token_ids:
        body["return_token_ids"] = True
    if request.structured_output is not None:
        body.update(_structured_fields(request.structured_output))
    return body


def parse_chunk(data: str) -> Chunk:
    """One SSE `data:` payload of a chat-completions stream."""
    try:
        event = json.loads(data)
    except json.JSONDecodeError as exc:
        raise RemoteProtocolError(f"the server sent a stream event that is not JSON: {data[:200]!r}") from exc
    if not isinstance(event, dict):
        raise RemoteProtocolError(f"the server sent a stream event that is not an object: {data[:200]!r}")
    if "error" in event and "choices" not in event:
        error = event["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise GenerationError(f"the server failed this request mid-stream: {message}")
    choices, usage = event.get("choices"), event.get("usage")
    if not isinstance(choices, list) or (usage is not None and not isinstance(usage, dict)):
        raise RemoteProtocolError(f"not a chat.completion.chunk (no choices list): {data[:200]!r}")
    if not choices:
        return Chunk("", "", (), None, usage)
    choice = choices[0]
    delta = choice.get("delta") if isinstance(choice, dict) else None
    if delta is None and isinstance(choice, dict) and "text" in choice:  # a text completion's chunk
        delta = {"content": choice["text"]}
    if not isinstance(delta, dict):
        raise RemoteProtocolError(f"a chunk choice has no delta object: {data[:200]!r}")
    reasoning = delta.get("reasoning") or delta.get("reasoning_content") or ""
    content = delta.get("content") or ""
    ids = choice.get("token_ids") or ()
    if not isinstance(reasoning, str) or not isinstance(content, str) or not isinstance(ids, list | tuple):
        raise RemoteProtocolError(f"a chunk has ill-typed content, reasoning or token_ids: {data[:200]!r}")
    return Chunk(reasoning, content, tuple(int(t) for t in ids), choice.get("finish_reason"), usage)


async def sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The `data` fields of an SSE stream, one per event (multi-line data joined by newlines)."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        name, _, value = line.partition(":")
        if name == "data":
            lines.append(value[1:] if value.startswith(" ") else value)
    if lines:
        yield "\n".join(lines)


def usage_from(raw: dict[str, Any] | None, request: ChatRequest, completion_ids: int, chunks: int) -> Usage:
    if raw is None:
        return Usage(len(request.prompt_token_ids), completion_ids or chunks)
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        int(raw.get("prompt_tokens", 0)), int(raw.get("completion_tokens", 0)), int(details.get("cached_tokens") or 0)
    )


def status_error(status: int, text: str, what: str) -> RemoteStatusError:
    try:
        error = json.loads(text).get("error", text)
        message = error.get("message", error) if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = text[:300]
    hint = {
        401: " (check OPENAI_API_KEY)",
        403: " (check OPENAI_API_KEY)",
        404: " (check OPENAI_BASE_URL and OPENAI_MODEL)",
    }
    return RemoteStatusError(status, f"{what} answered {status}: {message}{hint.get(status, '')}")
