from __future__ import annotations

from typing import Any

import pytest

from yap_engines import (
    ChatRequest,
    InvalidRequestError,
    InvalidSamplingError,
    Sampling,
    StructuredOutput,
    normalize_json,
)

VALID_EDGES = [
    ("temperature", 0.0),
    ("temperature", 2),
    ("top_p", 1.0),
    ("top_p", 0.01),
    ("top_k", -1),
    ("top_k", 1),
    ("top_k", 200),
    ("min_p", 0),
    ("min_p", 1.0),
    ("repetition_penalty", 1.0),
    ("repetition_penalty", 2.0),
    ("presence_penalty", -2),
    ("presence_penalty", 2.0),
    ("frequency_penalty", -2.0),
    ("max_tokens", 1),
    ("max_tokens", 150),
    ("stop", ["a"] * 8),
    ("seed", 0),
    ("seed", -5),
]

INVALID = [
    ("temperature", -0.1),
    ("temperature", 2.01),
    ("temperature", "hot"),
    ("temperature", True),
    ("temperature", float("nan")),
    ("top_p", 0.0),
    ("top_p", 1.5),
    ("top_k", 0),
    ("top_k", 201),
    ("top_k", -2),
    ("top_k", 1.5),
    ("min_p", -0.1),
    ("min_p", 1.1),
    ("repetition_penalty", 0.99),
    ("repetition_penalty", 2.5),
    ("presence_penalty", -2.1),
    ("frequency_penalty", 3),
    ("max_tokens", 0),
    ("max_tokens", 151),
    ("max_tokens", "10"),
    ("stop", "END"),
    ("stop", ["a"] * 9),
    ("stop", [""]),
    ("stop", [1]),
    ("seed", 1.5),
    ("seed", "7"),
    ("logit_bias", {"x": 1}),
    ("logit_bias", {1: 101}),
    ("bogus", 1),
]


@pytest.mark.parametrize(("key", "value"), VALID_EDGES)
def test_range_edges_are_accepted(key: str, value: Any) -> None:
    sampling = Sampling.from_dict({key: value}, max_tokens_limit=150)
    assert sampling.as_dict()[key] == value


@pytest.mark.parametrize(("key", "value"), INVALID)
def test_bad_values_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(InvalidSamplingError) as info:
        Sampling.from_dict({key: value}, max_tokens_limit=150)
    assert info.value.key == key
    assert key in str(info.value)


def test_overrides_apply_key_by_key_and_keep_the_limit() -> None:
    base = Sampling.from_dict({"temperature": 0.3, "top_k": 40}, max_tokens_limit=100)
    turn = base.merged({"temperature": 0.9})
    assert (turn.temperature, turn.top_k) == (0.9, 40)
    with pytest.raises(InvalidSamplingError, match="max_tokens"):
        turn.merged({"max_tokens": 101})


def test_logit_bias_keys_become_token_ids() -> None:
    assert Sampling(logit_bias={"12": -100, 3: 5}).logit_bias == {12: -100.0, 3: 5.0}


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("json_schema", "not json"),
        ("json_schema", [1]),
        ("regex", ""),
        ("choice", []),
        ("choice", "yes"),
        ("choice", ["yes", ""]),
        ("grammar", None),
        ("xml", "x"),
    ],
)
def test_bad_structured_output_specs_are_rejected(kind: str, spec: Any) -> None:
    with pytest.raises(InvalidRequestError):
        StructuredOutput(kind, spec)  # type: ignore[arg-type]


def test_structured_output_constructors_normalise() -> None:
    assert StructuredOutput.json_schema('{"type": "object"}').spec == {"type": "object"}
    assert StructuredOutput.choice(["a", "b"]).spec == ("a", "b")
    assert StructuredOutput.json_object().spec is None


def test_requests_need_an_id_and_a_prompt() -> None:
    with pytest.raises(InvalidRequestError, match="request_id"):
        ChatRequest("", (1,))
    with pytest.raises(InvalidRequestError, match="prompt_token_ids"):
        ChatRequest("r", ())


def test_normalize_json_accepts_raw_control_characters_and_emits_strict_json() -> None:
    import json

    raw = '{"a": "x\x08y",\t"b": [1,\r2]}'
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert json.loads(normalize_json(raw)) == {"a": "x\by", "b": [1, 2]}


def test_the_seeds_repeat_penalty_is_read_as_repetition_penalty() -> None:
    assert Sampling().merged({"repeat_penalty": 1.2}).repetition_penalty == 1.2
    with pytest.raises(InvalidSamplingError, match="repetition_penalty"):
        Sampling().merged({"repeat_penalty": 5.0})  # the range is repetition_penalty's
    with pytest.raises(InvalidSamplingError, match="given twice"):
        Sampling().merged({"repeat_penalty": 1.1, "repetition_penalty": 1.2})
