"""The body of `POST /v1/chat/completions`: validated into what the engine needs, or an `OpenAIError`.

Sampling fields go through `yap_engines.Sampling` (the protocol's ranges, one place); structured
outputs through `StructuredOutput`. Errors carry the OpenAI error shape and name the offending
parameter as the client spelled it. Parameters Yap reads but cannot honour are refused, never dropped;
a few that do not change the generated text (`user`, `metadata`, `store`, ...) are accepted and ignored.
A field Yap does not know at all is accepted and ignored, as vLLM does (routers such as `vllm-router`
add their own, e.g. `no_stop_trim`): `ChatCall.ignored` names them so the route can log each once.
Known fields stay typed and validated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import JSONResponse

from yap_engines import InvalidRequestError, InvalidSamplingError, Sampling, StructuredOutput
from yap_engines.function_tools import FunctionTool, ToolSet


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        type: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    continuous_usage_stats: bool = False


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1)
    arguments: str = "{}"


class ToolCallIn(BaseModel):
    """A call in an assistant message, as the client echoes it back."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessage(BaseModel):
    """One message. Text content only; `name`, `reasoning_content` and other extras are ignored
    (reasoning never goes back into a prompt). An assistant message may carry `tool_calls`; a `tool`
    message answers one of them by `tool_call_id`."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        texts = []
        for part in value:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError('only text content is supported: use a string or [{"type": "text", "text": "..."}]')
            texts.append(part["text"])
        return "".join(texts)


def _off(name: str, value: Any) -> bool:
    if name == "n":
        return value is None or (value == 1 and not isinstance(value, bool))
    return value is None or value is False or value == [] or value == "none" or (name == "top_logprobs" and value == 0)


class ChatCompletionBody(BaseModel):
    """The request fields Yap reads. Unknown fields are kept aside (`model_extra`) and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # sampling: typed and range-checked by `Sampling`, so the error names the key
    temperature: Any = None
    top_p: Any = None
    top_k: Any = None
    min_p: Any = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    stop: Any = None
    seed: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    repetition_penalty: Any = None
    logit_bias: Any = None
    # structured outputs (OpenAI's response_format with Yap's regex/choice/grammar types, vLLM's guided_*)
    response_format: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None
    guided_json: Any = None
    guided_regex: Any = None
    guided_choice: Any = None
    guided_grammar: Any = None
    # vLLM/SGLang extensions
    chat_template_kwargs: dict[str, Any] | None = None
    include_reasoning: bool = True
    return_token_ids: bool = False
    # accepted only in their "off" form
    n: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    # function calling (see `_tools`)
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    # accepted and ignored: they do not change the generated text
    user: Any = None
    metadata: Any = None
    store: Any = None
    service_tier: Any = None
    prompt_cache_key: Any = None
    safety_identifier: Any = None


@dataclass(frozen=True)
class ChatCall:
    """A validated chat completion request."""

    model: str
    messages: list[dict[str, Any]]
    sampling: Sampling
    structured_output: StructuredOutput | None = None
    stream: bool = False
    include_usage: bool = False
    include_reasoning: bool = True
    return_token_ids: bool = False
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    tools: ToolSet | None = None
    ignored: tuple[str, ...] = ()  # unknown top-level fields, accepted and ignored
    prompt_ids: tuple[int, ...] | None = None  # `/v1/completions`: the raw token prompt (no messages)


_SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
)
_UNSUPPORTED = {
    "n": "only n=1 is supported; send one request per completion",
    "logprobs": "logprobs are not supported; remove logprobs",
    "top_logprobs": "logprobs are not supported; remove top_logprobs",
}


def parse_chat_body(body: Any, base: Sampling) -> ChatCall:
    """Validate a decoded JSON body against `base` sampling (the server's defaults and output cap)."""
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object", code="invalid_request")
    try:
        parsed = ChatCompletionBody.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    for name, hint in _UNSUPPORTED.items():
        if not _off(name, getattr(parsed, name)):
            raise OpenAIError(400, f"{name}: {hint}", code="unsupported_parameter", param=name)
    messages = _messages(parsed.messages)
    tools = _tools(parsed)
    structured = _structured(parsed)
    if structured is not None and tools is not None and tools.forced:
        raise OpenAIError(
            400,
            f"tool_choice {parsed.tool_choice!r} forces a call through guided decoding, which cannot be combined "
            "with another output constraint: drop response_format (or the guided_* field) or use tool_choice auto",
            code="invalid_value",
            param="tool_choice",
        )
    stream_options = parsed.stream_options
    if stream_options is not None and not parsed.stream:
        raise OpenAIError(
            400, "stream_options is only allowed with stream: true", code="invalid_request", param="stream_options"
        )
    return ChatCall(
        model=parsed.model,
        messages=messages,
        sampling=_sampling(parsed, base),
        structured_output=structured,
        stream=parsed.stream,
        include_usage=bool(stream_options and stream_options.include_usage),
        include_reasoning=parsed.include_reasoning,
        return_token_ids=parsed.return_token_ids,
        template_kwargs=dict(parsed.chat_template_kwargs or {}),
        tools=tools,
        ignored=tuple(sorted(parsed.model_extra or ())),
    )


def parse_completion_body(body: Any, base: Sampling) -> ChatCall:
    """`POST /v1/completions` with a raw token prompt (`prompt: [ids]`, as vLLM accepts it): how a router
    or a Yap edge resumes a turn from the tokens already streamed. Every other field is read as on the
    chat endpoint (same validation); text prompts are refused (the chat endpoint renders text)."""
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object", code="invalid_request")
    prompt = body.get("prompt")
    if not (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt)
    ):
        raise OpenAIError(
            400,
            "prompt: send a non-empty list of token ids (for text, use POST /v1/chat/completions)",
            code="invalid_value",
            param="prompt",
        )
    if "messages" in body:
        raise OpenAIError(400, "messages: not allowed with a token prompt", code="invalid_value", param="messages")
    rest = {key: value for key, value in body.items() if key != "prompt"}
    call = parse_chat_body({**rest, "messages": [{"role": "user", "content": ""}]}, base)
    return replace(call, messages=[], prompt_ids=tuple(prompt))


_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """The messages as plain dicts; every `tool` message answers a call made before it."""
    out: list[dict[str, Any]] = []
    call_ids: set[str] = set()
    for index, m in enumerate(messages):
        message: dict[str, Any] = {"role": _ROLES[m.role], "content": m.content or ""}
        if m.tool_calls:
            if m.role != "assistant":
                raise OpenAIError(
                    400,
                    f"messages[{index}].tool_calls: only assistant messages carry tool calls",
                    code="invalid_value",
                    param=f"messages[{index}].tool_calls",
                )
            message["tool_calls"] = [call.model_dump() for call in m.tool_calls]
            call_ids.update(call.id for call in m.tool_calls)
        if m.role == "tool":
            if m.tool_call_id is None or m.tool_call_id not in call_ids:
                given = "no tool_call_id" if m.tool_call_id is None else f"tool_call_id {m.tool_call_id!r}"
                raise OpenAIError(
                    400,
                    f"messages[{index}].tool_call_id: a tool message answers a call of an earlier assistant message, "
                    f"and {given} matches none; send the assistant message with its tool_calls first",
                    code="invalid_value",
                    param=f"messages[{index}].tool_call_id",
                )
            message["tool_call_id"] = m.tool_call_id
        out.append(message)
    return out


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _tools(parsed: ChatCompletionBody) -> ToolSet | None:
    """`tools`, `tool_choice` and `parallel_tool_calls` as a `ToolSet` (None when no tools are declared)."""
    raw, choice = parsed.tools, parsed.tool_choice
    if raw is None or raw == []:
        if choice is None or choice in ("none", "auto"):
            return None
        raise OpenAIError(
            400, "tool_choice: it forces a call, but no tools are declared; send tools", code="invalid_value",
            param="tool_choice",
        )  # fmt: skip
    if not isinstance(raw, list):
        raise OpenAIError(400, "tools: must be a list of function tools", code="invalid_value", param="tools")
    tools: list[FunctionTool] = []
    for index, tool in enumerate(raw):
        where = f"tools[{index}]"
        if (
            not isinstance(tool, Mapping)
            or tool.get("type") != "function"
            or not isinstance(tool.get("function"), Mapping)
        ):
            raise OpenAIError(
                400, f'{where}: must be {{"type": "function", "function": {{"name": ..., "parameters": {{...}}}}}}',
                code="invalid_value", param=where,
            )  # fmt: skip
        function = tool["function"]
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise OpenAIError(
                400, f"{where}.function.name: must be 1-64 letters, digits, _ or -", code="invalid_value",
                param=f"{where}.function.name",
            )  # fmt: skip
        if name in (t.name for t in tools):
            raise OpenAIError(
                400, f"{where}.function.name: {name!r} is declared twice", code="invalid_value",
                param=f"{where}.function.name",
            )  # fmt: skip
        description = function.get("description") or ""
        parameters = function.get("parameters")
        try:
            tools.append(
                FunctionTool(name, str(description), parameters if parameters is not None else {"type": "object"})
            )
        except InvalidRequestError as exc:
            param = f"{where}.function.parameters"
            raise OpenAIError(400, f"{param}: {exc}", code="invalid_value", param=param) from None
    named = None
    if choice is None:
        choice = "auto"
    elif isinstance(choice, Mapping):
        function = choice.get("function")
        named = function.get("name") if isinstance(function, Mapping) else None
        if choice.get("type") != "function" or not isinstance(named, str):
            raise OpenAIError(
                400, 'tool_choice: must be "none", "auto", "required" or '
                '{"type": "function", "function": {"name": ...}}', code="invalid_value", param="tool_choice",
            )  # fmt: skip
        if named not in (t.name for t in tools):
            raise OpenAIError(
                400, f"tool_choice: names the function {named!r}, which is not in tools "
                f"(declared: {', '.join(t.name for t in tools)})", code="invalid_value", param="tool_choice",
            )  # fmt: skip
        choice = "named"
    elif choice not in ("none", "auto", "required"):
        raise OpenAIError(
            400, f'tool_choice: {choice!r} is not "none", "auto", "required" or a named function',
            code="invalid_value", param="tool_choice",
        )  # fmt: skip
    return ToolSet(tuple(tools), choice, named, parsed.parallel_tool_calls is not False)


def _validation_error(exc: ValidationError) -> OpenAIError:
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        message = f"unsupported parameter {param!r}: remove it (see the README's OpenAI-compatible API section)"
        return OpenAIError(400, message, code="unsupported_parameter", param=param)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "literal_error" and param and param.endswith(".role"):
        message = "role must be system, developer, user, assistant or tool"
    return OpenAIError(400, f"{param}: {message}", code="invalid_value", param=param)


def _sampling(parsed: ChatCompletionBody, base: Sampling) -> Sampling:
    overrides = {key: getattr(parsed, key) for key in _SAMPLING_FIELDS if getattr(parsed, key) is not None}
    names = {key: key for key in overrides}
    if isinstance(overrides.get("stop"), str):
        overrides["stop"] = [overrides["stop"]]
    if parsed.max_tokens is not None and parsed.max_completion_tokens is not None:
        if parsed.max_tokens != parsed.max_completion_tokens:
            raise OpenAIError(
                400,
                "max_tokens and max_completion_tokens disagree: send only max_completion_tokens",
                code="invalid_value",
                param="max_tokens",
            )
    for wire in ("max_completion_tokens", "max_tokens"):
        if getattr(parsed, wire) is not None:
            overrides["max_tokens"], names["max_tokens"] = getattr(parsed, wire), wire
    if isinstance(overrides.get("logit_bias"), Mapping) and base.logit_bias:
        overrides["logit_bias"] = {**base.logit_bias, **{_token_key(k): v for k, v in overrides["logit_bias"].items()}}
    try:
        return base.merged(overrides)
    except InvalidSamplingError as exc:
        param = names.get(exc.key, exc.key)
        detail = str(exc).removeprefix(f"sampling.{exc.key}: ")
        if exc.key == "max_tokens" and base.max_tokens_limit is not None:
            detail += f" (this server's output cap is CHAT_MAX_OUT={base.max_tokens_limit})"
        raise OpenAIError(400, f"{param}: {detail}", code="invalid_value", param=param) from None


def _token_key(key: Any) -> Any:
    try:
        return int(key)
    except (TypeError, ValueError):
        return key  # Sampling names the bad key


_GUIDED = {
    "guided_json": "json_schema",
    "guided_regex": "regex",
    "guided_choice": "choice",
    "guided_grammar": "grammar",
}


def _structured(parsed: ChatCompletionBody) -> StructuredOutput | None:
    found: list[tuple[str, StructuredOutput]] = []
    if parsed.response_format is not None:
        spec = _from_response_format(parsed.response_format)
        if spec is not None:
            found.append(("response_format", spec))
    if parsed.structured_outputs is not None:
        found.append(("structured_outputs", _from_structured_outputs(parsed.structured_outputs)))
    for name, kind in _GUIDED.items():
        value = getattr(parsed, name)
        if value is not None:
            found.append((name, _build(name, kind, value)))
    if len(found) > 1:
        names = ", ".join(name for name, _ in found)
        raise OpenAIError(
            400, f"more than one output constraint ({names}): send only one", code="invalid_value", param=found[1][0]
        )
    return found[0][1] if found else None


def _from_response_format(fmt: dict[str, Any]) -> StructuredOutput | None:
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return StructuredOutput.json_object()
    if kind == "json_schema":
        inner = fmt.get("json_schema")
        if not isinstance(inner, Mapping) or "schema" not in inner:
            raise OpenAIError(
                400,
                'response_format.json_schema must be {"name": ..., "schema": {...}}',
                code="invalid_value",
                param="response_format.json_schema",
            )
        return _build("response_format.json_schema.schema", "json_schema", inner["schema"])
    if kind in ("regex", "choice", "grammar"):
        if kind not in fmt:
            raise OpenAIError(
                400,
                f'response_format of type {kind} needs a "{kind}" field',
                code="invalid_value",
                param="response_format",
            )
        return _build(f"response_format.{kind}", kind, fmt[kind])
    raise OpenAIError(
        400,
        f"response_format.type {kind!r} is unknown: use text, json_object, json_schema, regex, choice or grammar",
        code="invalid_value",
        param="response_format.type",
    )


_STRUCTURED_OUTPUTS = {"json": "json_schema", "regex": "regex", "choice": "choice", "grammar": "grammar"}


def _from_structured_outputs(params: dict[str, Any]) -> StructuredOutput:
    """vLLM's `structured_outputs` object: exactly one of json, regex, choice, grammar, json_object."""
    given = [key for key, value in params.items() if value is not None and value is not False]
    allowed = (*_STRUCTURED_OUTPUTS, "json_object")
    if len(given) != 1 or given[0] not in allowed:
        raise OpenAIError(
            400,
            f"structured_outputs must set exactly one of {', '.join(allowed)} (got {', '.join(given) or 'none'})",
            code="invalid_value",
            param="structured_outputs",
        )
    key = given[0]
    if key == "json_object":
        return StructuredOutput.json_object()
    return _build(f"structured_outputs.{key}", _STRUCTURED_OUTPUTS[key], params[key])


def _build(param: str, kind: str, spec: Any) -> StructuredOutput:
    try:
        return StructuredOutput(kind, spec)  # type: ignore[arg-type]
    except InvalidRequestError as exc:
        raise OpenAIError(400, f"{param}: {exc}", code="invalid_value", param=param) from None
