"""The `/ws` wire format: the envelope, client payload models, server frame builders, error codes.

Every frame is `{"type", "session_id", "request_id", "payload"}`. Parsing raises `WireError` with
the protocol's error code and a message that says what to fix; the connection stays open.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from yap_engines.errors import InvalidSamplingError
from yap_engines.types import Sampling

from ..frames import WireError, describe_errors
from .session import TurnOptions

if TYPE_CHECKING:
    from yap_engines.tool import ToolDecision

UNKNOWN = "unknown"

CLIENT_TYPES = ("start", "message", "followup", "prefill", "cancel", "end", "ping", "pong")

PREFILL_MAX_CHARS = 8192
"""The longest interim transcript a `prefill` takes (a minute of speech is about 1,000 characters)."""

IDLE_CLOSE_REASON = "idle_timeout"  # the reason of the idle close (4000), as the seed system's clients expect it

SEED_TOOL_NAME = "take_screenshot"  # the classifier's one tool, when RESPONSES_TOOL_NAME is empty


class Envelope(BaseModel):
    """A parsed client frame."""

    model_config = ConfigDict(extra="ignore")

    type: str
    session_id: str = Field(min_length=1)
    request_id: str = Field(min_length=1)
    payload: dict[str, Any] = Field(default_factory=dict)


class HistoryItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str


class StartPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    chat_prompt: str | None = None
    personality: str | None = None
    gender: str | None = None
    history: list[HistoryItem] = Field(default_factory=list)
    user_utterance: str | None = None
    sampling: dict[str, Any] | None = None


class MessagePayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_utterance: str = Field(min_length=1)
    sampling: dict[str, Any] | None = None


class FollowupPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    analysis_text: str = Field(min_length=1)


class PrefillPayload(BaseModel):
    """`prefill`: the interim transcript so far (may be empty: then persona and history are warmed)."""

    model_config = ConfigDict(extra="ignore")

    user_utterance: StrictStr = Field(max_length=PREFILL_MAX_CHARS)


class CancelPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    reason: str | None = None
    spoken_text: str | None = None


PAYLOADS: dict[str, type[BaseModel]] = {
    "start": StartPayload,
    "message": MessagePayload,
    "followup": FollowupPayload,
    "cancel": CancelPayload,
    "prefill": PrefillPayload,
}


def parse_envelope(data: dict[str, Any]) -> Envelope:
    """Validate a decoded frame as an envelope; raise `WireError("invalid_message"|"unknown_type")`."""
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as exc:
        raise WireError(
            "invalid_message",
            describe_errors(exc, "")
            + ' (every frame needs string "type", "session_id", "request_id" and an object "payload")',
        ) from None
    if envelope.type not in CLIENT_TYPES:
        raise WireError("unknown_type", f"unknown type {envelope.type!r}; valid types: {', '.join(CLIENT_TYPES)}")
    return envelope


def parse_payload(envelope: Envelope) -> Any:
    """Validate the payload of `envelope` for its type; raise `WireError("invalid_payload")` naming the field."""
    model = PAYLOADS.get(envelope.type)
    if model is None:
        return None
    try:
        return model.model_validate(envelope.payload)
    except ValidationError as exc:
        raise WireError("invalid_payload", describe_errors(exc, "payload.")) from None


def parse_sampling(raw: Mapping[str, Any] | None, base: Sampling, options: TurnOptions) -> tuple[Sampling, TurnOptions]:
    """Apply a wire `sampling` object on top of `base`/`options`; raise `WireError("invalid_sampling")`."""
    if not raw:
        return base, options
    values = dict(raw)
    sanitize = values.pop("sanitize_output", options.sanitize_output)
    if not isinstance(sanitize, bool):
        raise WireError("invalid_sampling", "sampling.sanitize_output: must be true or false")
    reasoning = values.pop("reasoning", options.reasoning)
    if reasoning not in ("hide", "stream"):
        raise WireError("invalid_sampling", 'sampling.reasoning: must be "hide" or "stream"')
    try:
        sampling = base.merged(values)
    except InvalidSamplingError as exc:
        raise WireError("invalid_sampling", str(exc), extra={"key": exc.key}) from None
    return sampling, TurnOptions(sanitize, reasoning)


def frame(kind: str, session_id: str, request_id: str, /, **payload: Any) -> dict[str, Any]:
    """A server frame with the common envelope."""
    return {"type": kind, "session_id": session_id, "request_id": request_id, "payload": payload}


def error_frame(session_id: str, request_id: str, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return frame("error", session_id, request_id, code=code, message=message, **extra)


def ack_frame(session_id: str, request_id: str, answered: str, /, **payload: Any) -> dict[str, Any]:
    """The `ack` of a `start`, `message` or `followup` frame: payload `{"for": <that frame's type>, ...}`.

    `message` and `followup` get `{"for": ..., "ok": true}` before their turn's first frame (the seed
    system's clients wait for it); `start` adds its session details; a finished `prefill` its
    `prompt_tokens` and `cached_tokens`."""
    return frame("ack", session_id, request_id, **{"for": answered}, **payload)


def toolcall_payload(decision: ToolDecision, tool_name: str) -> dict[str, Any]:
    """The `toolcall` frame's payload, the seed system's shape: `raw` is the JSON array of tool calls
    (`[{"name": tool_name}]` for yes, `[]` for no), `label` the classifier's label (`timeout`/`error`
    when it timed out/failed). `tool_name` is the function `/v1/responses` calls on a yes
    (`RESPONSES_TOOL_NAME`; `SEED_TOOL_NAME` when that is empty)."""
    calls = [{"name": tool_name or SEED_TOOL_NAME}] if decision.status == "yes" else []
    return {"status": decision.status, "score": decision.score, "raw": calls, "label": decision.label}


def server_time() -> float:
    return time.time()
