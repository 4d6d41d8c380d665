"""Hypothesis strategies for `/ws` client traffic: well-formed, nearly well-formed and hostile frames.

An `Action` is one thing a client does: send a text frame, send raw bytes as a text frame (invalid
UTF-8), send a binary frame, or pause (so frames land mid-stream). Text frames that are valid
envelopes get a fresh `request_id` when sent, so the turn invariants can be checked per id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from hypothesis import strategies as st

from .harness import MAX_MESSAGE_BYTES

Kind = Literal["envelope", "text", "invalid_utf8", "binary", "pause"]
SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "max_tokens",
    "stop",
    "seed",
    "sanitize_output",
    "reasoning",
    "logit_bias",
)


@dataclass(frozen=True)
class Action:
    kind: Kind
    envelope: dict[str, Any] | None = None  # kind "envelope": request_id is filled in when sent
    text: str = ""
    data: bytes = b""
    pause_s: float = 0.0


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
words = st.text(st.characters(codec="utf-8"), min_size=0, max_size=60)
maybe_text = st.one_of(words, words, json_values)

sampling = st.dictionaries(
    st.sampled_from(SAMPLING_KEYS) | st.text(max_size=10),
    st.one_of(
        st.floats(min_value=-3, max_value=3),
        st.integers(-5, 300),
        st.lists(st.text(max_size=6), max_size=10),
        st.sampled_from(["hide", "stream", "loud"]),
        json_values,
    ),
    max_size=4,
)
history = st.lists(
    st.one_of(
        st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": words}),
        st.fixed_dictionaries({"role": st.text(max_size=9), "content": maybe_text}),
        json_values,
    ),
    max_size=4,
)


def _payload(kind: str) -> st.SearchStrategy[Any]:
    fields: dict[str, st.SearchStrategy[Any]] = {
        "start": st.fixed_dictionaries(
            {},
            optional={
                "chat_prompt": st.one_of(st.just("You are a brief voice assistant."), maybe_text),
                "personality": maybe_text,
                "gender": maybe_text,
                "history": st.one_of(history, json_values),
                "user_utterance": st.one_of(st.just("hello there"), maybe_text),
                "sampling": st.one_of(sampling, json_values),
            },
        ),
        "message": st.fixed_dictionaries(
            {"user_utterance": st.one_of(st.just("how are you?"), maybe_text)},
            optional={"sampling": st.one_of(sampling, json_values)},
        ),
        "followup": st.fixed_dictionaries({}, optional={"analysis_text": maybe_text}),
        "cancel": st.fixed_dictionaries({}, optional={"reason": maybe_text, "spoken_text": maybe_text}),
    }
    return st.one_of(fields.get(kind, st.just({})), st.dictionaries(st.text(max_size=8), json_values, max_size=3))


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed envelope (its payload may still be wrong): start/message/... with fuzzed payloads."""
    kind = draw(st.sampled_from(["start", "start", "message", "message", "message", "followup", "cancel", "end"]))
    kind = draw(st.sampled_from([kind] * 9 + ["ping", "pong"]))
    return {"type": kind, "session_id": draw(st.sampled_from(["s1", "s2"])), "payload": draw(_payload(kind))}


def _deep(depth: int, bracket: str) -> str:
    close = {"[": "]", "{": "}"}[bracket]
    if bracket == "{":
        return '{"a":' * depth + "1" + close * depth
    return bracket * depth + close * depth


broken_json = st.one_of(
    st.text(max_size=200),  # anything, mostly not JSON
    json_values.map(json.dumps),  # JSON that is not an object, or an object without an envelope
    st.fixed_dictionaries(  # envelope fields of the wrong type
        {"type": json_values, "session_id": json_values, "request_id": json_values, "payload": json_values}
    ).map(json.dumps),
    st.fixed_dictionaries({"type": st.text(max_size=12), "session_id": st.just("s1"), "request_id": st.just("x")}).map(
        json.dumps
    ),
    st.builds(_deep, st.integers(1, 200_000), st.sampled_from(["[", "{"])),  # deep nesting, maybe oversize
    st.integers(MAX_MESSAGE_BYTES - 8, MAX_MESSAGE_BYTES * 4).map(lambda n: '{"type":"ping","x":"' + "a" * n + '"}'),
    st.sampled_from(["__END__", "__CANCEL__", " __CANCEL__\n", "__cancel__", "__END__x", "\t__END__ "]),
)

actions = st.one_of(
    envelopes().map(lambda e: Action("envelope", envelope=e)),
    envelopes().map(lambda e: Action("envelope", envelope=e)),
    broken_json.map(lambda t: Action("text", text=t)),
    st.binary(max_size=64).map(lambda b: Action("invalid_utf8", data=b"\xff" + b)),
    st.binary(max_size=MAX_MESSAGE_BYTES + 64).map(lambda b: Action("binary", data=b)),
    st.floats(0, 0.05).map(lambda s: Action("pause", pause_s=s)),
)
