"""The frames of `WS /v1/responses`, as pydantic models: what a client sends and what the server answers.

Client events are `response.create` (flat, as OpenAI's WebSocket mode sends them) and
`response.cancel`. Server events follow OpenAI's Responses streaming shapes; every one carries a
`sequence_number` that increases by one per event on the connection. An `error` event carries its
code and message both at the top level (OpenAI SDK's `ResponseErrorEvent`) and under `error`
(OpenAI's WebSocket mode, read by Pipecat).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, field_validator

from ..frames import WireError

# -- client events ---------------------------------------------------------------------------------


class TextPart(BaseModel):
    """A text content part of an input message (`input_text`; `output_text` in assistant messages)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["input_text", "output_text", "text"]
    text: str


class MessageInput(BaseModel):
    """A conversation message; `content` is a string or text parts."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["message"] = "message"
    role: Literal["developer", "system", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionCallInput(BaseModel):
    """A function call the assistant made earlier (echoed back by the client)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str = ""


class FunctionCallOutputInput(BaseModel):
    """The client's result for a function call."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[TextPart]

    @property
    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "".join(part.text for part in self.output)


def _item_kind(value: Any) -> str:
    return str(value.get("type", "message")) if isinstance(value, dict) else "message"


InputItem = Annotated[
    Annotated[MessageInput, Tag("message")]
    | Annotated[FunctionCallInput, Tag("function_call")]
    | Annotated[FunctionCallOutputInput, Tag("function_call_output")],
    Discriminator(
        _item_kind,
        custom_error_type="unsupported_item",
        custom_error_message="input items must be messages, function_call or function_call_output",
    ),
]


class ToolSpec(BaseModel):
    """A declared tool (echoed back in the response object). A function tool is flat, as in OpenAI's
    Responses API: `{"type": "function", "name", "description", "parameters", "strict"}`."""

    model_config = ConfigDict(extra="allow")

    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None


ToolChoice = Literal["auto", "none", "required"] | dict[str, Any]


class ResponseCreate(BaseModel):
    """`response.create`: one response over `input` (plus the conversation of `previous_response_id`)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["response.create"]
    model: str | None = None
    input: str | list[InputItem] = Field(default_factory=list)
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[ToolSpec] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    # extras beyond OpenAI's parameters
    top_k: int | None = None
    seed: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] | None = None
    logit_bias: dict[int, float] | None = None
    generate: bool = True  # false: warm the conversation into the prefix cache, answer with no output
    # accepted and without effect here: no server-side storage, no reasoning in output, text only
    store: bool | None = None
    stream: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None

    @field_validator("text")
    @classmethod
    def _plain_text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        output_format = (value or {}).get("format") or {"type": "text"}
        if not isinstance(output_format, dict) or output_format.get("type") != "text":
            raise ValueError('only {"format": {"type": "text"}} is served here; use /v1/chat/completions for JSON')
        return value

    def items(self) -> list[MessageInput | FunctionCallInput | FunctionCallOutputInput]:
        """`input` as items (a bare string is one user message)."""
        if isinstance(self.input, str):
            return [MessageInput(role="user", content=self.input)]
        return list(self.input)

    def sampling_overrides(self) -> dict[str, Any]:
        """The sampling keys this request sets, named as `yap_engines.Sampling` names them."""
        values = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_output_tokens,
            "top_k": self.top_k,
            "seed": self.seed,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "stop": self.stop,
            "logit_bias": self.logit_bias,
        }
        return {key: value for key, value in values.items() if value is not None}

    def declares_function(self, name: str) -> bool:
        return bool(name) and any(tool.type == "function" and tool.name == name for tool in self.tools)


class ResponseCancel(BaseModel):
    """`response.cancel`: stop the running response (all of it when `response_id` is omitted)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["response.cancel"]
    response_id: str | None = None


ClientEvent = Annotated[ResponseCreate | ResponseCancel, Field(discriminator="type")]
CLIENT_EVENT_TYPES = ("response.create", "response.cancel")
_client_event: TypeAdapter[ResponseCreate | ResponseCancel] = TypeAdapter(ClientEvent)


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)


def parse_client_event(raw: dict[str, Any]) -> ResponseCreate | ResponseCancel:
    """Validate one decoded client frame; raise `WireError` with `unknown_event_type` or `invalid_request`.

    (A frame that is not a JSON object is refused with `invalid_json` by the runtime before this.)"""
    kind = raw.get("type")
    if kind not in CLIENT_EVENT_TYPES:
        raise WireError(
            "unknown_event_type", f"unknown event type {kind!r}; send one of {', '.join(CLIENT_EVENT_TYPES)}"
        )
    try:
        return _client_event.validate_python(raw)
    except ValidationError as exc:
        raise WireError("invalid_request", f"{kind}: {_describe(exc)}") from None


# -- server objects --------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    """A fresh id in OpenAI's style (`resp_…`, `msg_…`, `fc_…`, `call_…`)."""
    return f"{prefix}_{uuid.uuid4().hex}"


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str = ""
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


Status = Literal["in_progress", "completed", "incomplete"]


class MessageOutput(BaseModel):
    """The assistant's text, one `output_text` part."""

    id: str = Field(default_factory=lambda: new_id("msg"))
    type: Literal["message"] = "message"
    status: Status = "in_progress"
    role: Literal["assistant"] = "assistant"
    content: list[OutputText] = Field(default_factory=list)


class FunctionCallOutput(BaseModel):
    """A function call: the classifier's decision for its declared tool, or a call the chat model made."""

    id: str = Field(default_factory=lambda: new_id("fc"))
    type: Literal["function_call"] = "function_call"
    status: Status = "in_progress"
    call_id: str = Field(default_factory=lambda: new_id("call"))
    name: str
    arguments: str = ""


OutputItem = MessageOutput | FunctionCallOutput


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, output_tokens: int, cached_tokens: int = 0) -> ResponseUsage:
        return cls(
            input_tokens=prompt_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=cached_tokens),
            output_tokens=output_tokens,
            output_tokens_details=OutputTokensDetails(),
            total_tokens=prompt_tokens + output_tokens,
        )


class ResponseError(BaseModel):
    code: str
    message: str


class IncompleteDetails(BaseModel):
    """Why a response stopped early: `max_output_tokens`, or (our extension) `cancelled`."""

    reason: Literal["max_output_tokens", "cancelled"]


class ResponseObject(BaseModel):
    """The `response` of `response.created` / `.completed` / `.incomplete` / `.failed`."""

    id: str = Field(default_factory=lambda: new_id("resp"))
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    status: Literal["in_progress", "completed", "incomplete", "failed"] = "in_progress"
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[ToolSpec] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = False
    store: bool = False
    metadata: dict[str, str] | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})


def error_event(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """An `error` event (its `sequence_number` is set when sent)."""
    return {
        "type": "error",
        "code": code,
        "message": message,
        "param": param,
        "error": {"type": "invalid_request_error", "code": code, "message": message, "param": param},
    }
