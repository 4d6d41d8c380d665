"""Value types that cross the engine seam. All frozen; `Sampling` and `StructuredOutput` validate."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from .errors import InvalidRequestError, InvalidSamplingError

FinishReason = Literal["stop", "length", "cancelled", "error"]

MAX_STOP_STRINGS = 8


@dataclass(frozen=True)
class Usage:
    """Token counts of one request. `cached_tokens` are prompt tokens served from the prefix cache."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass(frozen=True)
class Delta:
    """A piece of newly generated output. The last delta of a stream has `finish_reason` and `usage`."""

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class EngineHealth:
    """Result of `InferenceEngine.health()`: `ok` False means the engine cannot serve."""

    ok: bool
    detail: str = "ok"


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidSamplingError(key, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidSamplingError(key, "must be a finite number")
    return float(value)


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSamplingError(key, f"must be an integer, got {type(value).__name__}")
    return value


def _check_range(key: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    below = value <= low if low_open else value < low
    if below or value > high:
        interval = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise InvalidSamplingError(key, f"{value} is out of range {interval}")


SAMPLING_KEY_ALIASES: Mapping[str, str] = MappingProxyType({"repeat_penalty": "repetition_penalty"})  # seed 003


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters, validated on construction (ranges as in the wire protocol).

    `top_k=-1` disables top-k. `max_tokens_limit` is the deployment's output cap (`CHAT_MAX_OUT`);
    `max_tokens` above it is rejected. `logit_bias` maps token ids to a bias in [-100, 100].
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    max_tokens: int = 150
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logit_bias: Mapping[int, float] | None = None
    max_tokens_limit: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for key, low, high in (
            ("temperature", 0.0, 2.0),
            ("min_p", 0.0, 1.0),
            ("repetition_penalty", 1.0, 2.0),
            ("presence_penalty", -2.0, 2.0),
            ("frequency_penalty", -2.0, 2.0),
        ):
            value = _number(key, getattr(self, key))
            _check_range(key, value, low, high)
            object.__setattr__(self, key, value)
        top_p = _number("top_p", self.top_p)
        _check_range("top_p", top_p, 0.0, 1.0, low_open=True)
        object.__setattr__(self, "top_p", top_p)
        top_k = _integer("top_k", self.top_k)
        if top_k != -1 and not 1 <= top_k <= 200:
            raise InvalidSamplingError("top_k", f"{top_k} must be -1 (disabled) or in [1, 200]")
        max_tokens = _integer("max_tokens", self.max_tokens)
        limit = self.max_tokens_limit
        if max_tokens < 1 or (limit is not None and max_tokens > limit):
            raise InvalidSamplingError("max_tokens", f"{max_tokens} is out of range [1, {limit or 'inf'}]")
        self._validate_stop()
        if self.seed is not None:
            _integer("seed", self.seed)
        self._validate_logit_bias()

    def _validate_stop(self) -> None:
        stop = self.stop
        if isinstance(stop, str) or not isinstance(stop, Sequence):
            raise InvalidSamplingError("stop", "must be a list of strings")
        if len(stop) > MAX_STOP_STRINGS:
            raise InvalidSamplingError("stop", f"at most {MAX_STOP_STRINGS} strings, got {len(stop)}")
        if not all(isinstance(s, str) and s for s in stop):
            raise InvalidSamplingError("stop", "every entry must be a non-empty string")
        object.__setattr__(self, "stop", tuple(stop))

    def _validate_logit_bias(self) -> None:
        if self.logit_bias is None:
            return
        if not isinstance(self.logit_bias, Mapping):
            raise InvalidSamplingError("logit_bias", "must map token ids to numbers")
        bias: dict[int, float] = {}
        for token, value in self.logit_bias.items():
            try:
                token_id = int(token)
            except (TypeError, ValueError):
                raise InvalidSamplingError("logit_bias", f"key {token!r} is not a token id") from None
            number = _number("logit_bias", value)
            _check_range("logit_bias", number, -100.0, 100.0)
            bias[token_id] = number
        object.__setattr__(self, "logit_bias", bias)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, max_tokens_limit: int | None = None) -> Sampling:
        """Build from a wire mapping; unknown keys are an error naming the key.

        Without `max_tokens`, the reply cap defaults to the deployment's limit (or 150).
        """
        default_max = max_tokens_limit if max_tokens_limit is not None else cls.max_tokens
        return cls(max_tokens=default_max, max_tokens_limit=max_tokens_limit).merged(values)

    def merged(self, overrides: Mapping[str, Any]) -> Sampling:
        """A copy with `overrides` applied key by key (validated). `repeat_penalty` (the seed system's early
        name) is read as `repetition_penalty`."""
        known = {f.name for f in dataclasses.fields(self) if f.name != "max_tokens_limit"}
        values: dict[str, Any] = {}
        for key, value in overrides.items():
            name = SAMPLING_KEY_ALIASES.get(key, key)
            if name not in known:
                raise InvalidSamplingError(str(key), f"unknown sampling key; valid keys: {', '.join(sorted(known))}")
            if name in values:
                raise InvalidSamplingError(str(key), f"given twice (as {name} too); send one")
            values[name] = value
        if "stop" in values and isinstance(values["stop"], list):
            values["stop"] = tuple(values["stop"])
        return dataclasses.replace(self, **values)

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "max_tokens_limit"}
        data["stop"] = list(self.stop)
        return data


StructuredKind = Literal["json_schema", "json_object", "regex", "choice", "grammar"]


@dataclass(frozen=True)
class StructuredOutput:
    """A constraint on the output (guided decoding). Build it with the classmethods.

    `spec` is a JSON-schema dict (`json_schema`), a regex or EBNF grammar string (`regex`, `grammar`),
    a tuple of strings (`choice`), or None (`json_object`).
    """

    kind: StructuredKind
    spec: Any = None

    def __post_init__(self) -> None:
        kind, spec = self.kind, self.spec
        if kind == "json_schema":
            if isinstance(spec, str):
                try:
                    spec = json.loads(spec)
                except json.JSONDecodeError as exc:
                    raise InvalidRequestError(f"json_schema is not valid JSON: {exc}") from exc
            if not isinstance(spec, dict):
                raise InvalidRequestError("json_schema must be a JSON object (a dict)")
            object.__setattr__(self, "spec", spec)
        elif kind in ("regex", "grammar"):
            if not isinstance(spec, str) or not spec:
                raise InvalidRequestError(f"{kind} must be a non-empty string")
        elif kind == "choice":
            if isinstance(spec, str) or not isinstance(spec, Sequence) or not spec:
                raise InvalidRequestError("choice must be a non-empty list of strings")
            if not all(isinstance(c, str) and c for c in spec):
                raise InvalidRequestError("every choice must be a non-empty string")
            object.__setattr__(self, "spec", tuple(spec))
        elif kind == "json_object":
            object.__setattr__(self, "spec", None)
        else:
            raise InvalidRequestError(
                f"unknown structured output type {kind!r}; use json_schema, json_object, regex, choice or grammar"
            )

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any] | str) -> StructuredOutput:
        return cls("json_schema", dict(schema) if isinstance(schema, Mapping) else schema)

    @classmethod
    def json_object(cls) -> StructuredOutput:
        return cls("json_object")

    @classmethod
    def regex(cls, pattern: str) -> StructuredOutput:
        return cls("regex", pattern)

    @classmethod
    def choice(cls, options: Sequence[str]) -> StructuredOutput:
        return cls("choice", tuple(options))

    @classmethod
    def grammar(cls, ebnf: str) -> StructuredOutput:
        return cls("grammar", ebnf)


@dataclass(frozen=True)
class ChatRequest:
    """One generation request: already-rendered prompt token ids plus how to sample.

    The caller renders the chat template and tokenizes once (see `yap_engines.chat`).
    `session_id` lets routing adapters keep a session on one replica.

    `messages` are the `{role, content}` messages the ids were rendered from. In-process engines
    use the ids; engines that speak a chat API (the `openai` remote engine) send the messages and
    let the server render them, so it can split reasoning with its own parser. A request needs ids,
    messages, or both.
    """

    request_id: str
    prompt_token_ids: Sequence[int] = ()
    sampling: Sampling = field(default_factory=Sampling)
    structured_output: StructuredOutput | None = None
    session_id: str | None = None
    messages: Sequence[Mapping[str, str]] = ()

    def __post_init__(self) -> None:
        if not self.request_id:
            raise InvalidRequestError("request_id must be a non-empty string")
        if not self.prompt_token_ids and not self.messages:
            raise InvalidRequestError("prompt_token_ids and messages are both empty: render a prompt first")
        object.__setattr__(self, "prompt_token_ids", tuple(self.prompt_token_ids))
        object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))


def normalize_json(text: str) -> str:
    """Parse grammar-valid JSON leniently (raw control characters allowed) and re-serialise it strictly.

    Guided decoding lets raw control characters inside strings through; users expect JSON that a
    strict parser accepts. Raises `ValueError` when `text` is not JSON at all.
    """
    return json.dumps(json.loads(text, strict=False), ensure_ascii=False)
