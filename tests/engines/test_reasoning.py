"""The thinking-effort pipeline on the real vLLM CPU engine (demo model, random weights) and on `TrtEngine`.

With random weights only the constraint can explain a valid answer, and only the pipeline's budget
can explain where a thinking pass stops. Budgets and caps are small to keep the runs short.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import jsonschema
import pytest

from yap_engines import FakeEngine, Sampling, StructuredOutput
from yap_engines.chat import render_ids
from yap_engines.errors import ContextTooLongError
from yap_engines.reasoning import DEFAULT_CUTOFF_NOTICE, ReasoningPipeline, structured_output_from_dict

MESSAGES = [
    {"role": "system", "content": "You answer questions about the weather."},
    {"role": "user", "content": "Will it rain today? Answer yes or no."},
]
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no"]}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
    "additionalProperties": False,
}
BUDGET = 12


def banned(tokenizer: Any, *texts: str) -> dict[int, float]:
    """A logit bias that bans the end token and each single-token text (so lengths are the pipeline's)."""
    ids = [tokenizer.eos_token_id, *(tokenizer.encode(t, add_special_tokens=False)[0] for t in texts)]
    return dict.fromkeys(ids, -100.0)


def pipeline(engine: Any, tokenizer: Any, **options: Any) -> ReasoningPipeline:
    options.setdefault("budgets", {"none": 0, "low": BUDGET, "medium": 2 * BUDGET, "high": 4 * BUDGET})
    options.setdefault("final_max_tokens", 48)
    return ReasoningPipeline(engine, tokenizer, **options)


def rid() -> str:
    return f"reason-{uuid.uuid4().hex[:8]}"


@pytest.mark.vllm
async def test_four_passes_respect_the_budget_and_the_schema_constrains_the_answer(
    vllm_engine: Any, demo_tokenizer: Any
) -> None:
    sampling = Sampling(seed=3, logit_bias=banned(demo_tokenizer, "</think>"))
    run = pipeline(vllm_engine, demo_tokenizer, sampling=sampling)
    result = await run.run(MESSAGES, "low", StructuredOutput.json_schema(SCHEMA), request_id=rid())

    assert [p.name for p in result.passes] == ["think", "draft", "check", "final"]
    think, draft, check, final = result.passes
    for thinking_pass in (think, check):  # banned from closing, so each runs into its budget exactly
        assert thinking_pass.usage.completion_tokens == BUDGET
        assert thinking_pass.hit_budget and thinking_pass.finish_reason == "length"
    assert result.thinking.count(DEFAULT_CUTOFF_NOTICE) == 2
    assert "My draft answer:" in result.thinking and "Wait, have I made a mistake?" in result.thinking
    jsonschema.validate(json.loads(result.content), SCHEMA)
    draft_text = result.thinking.split("My draft answer:\n")[1].split("\n\nWait")[0]
    jsonschema.validate(json.loads(draft_text, strict=False), SCHEMA)
    assert draft.finish_reason == final.finish_reason == "stop"
    # Each prompt extends the previous one: the final prompt holds the first prompt, both thinking passes and the draft.
    assert final.usage.prompt_tokens > think.usage.prompt_tokens + 2 * BUDGET + draft.usage.completion_tokens
    assert result.usage.prompt_tokens == sum(p.usage.prompt_tokens for p in result.passes)
    assert result.usage.completion_tokens == sum(p.usage.completion_tokens for p in result.passes)
    assert final.usage.cached_tokens > 0  # the shared prefix came from the prefix cache


@pytest.mark.vllm
@pytest.mark.parametrize(
    ("response_format", "check"),
    [
        ({"type": "regex", "regex": "[a-z]{3}-[0-9]{2}"}, lambda text: re.fullmatch(r"[a-z]{3}-[0-9]{2}", text)),
        ({"type": "choice", "choices": ["alpha", "beta", "gamma"]}, lambda text: text in ("alpha", "beta", "gamma")),
        (
            {"type": "grammar", "grammar": 'root ::= greeting " " name "!"\ngreeting ::= "hi" | "hello"\n'
             "name ::= [a-z] [a-z]? [a-z]?"},
            lambda text: re.fullmatch(r"(hi|hello) [a-z]{1,3}!", text),
        ),
    ],
    ids=["regex", "choice", "grammar"],
)  # fmt: skip
async def test_effort_none_is_one_guided_pass_that_the_constraint_shapes(
    vllm_engine: Any, demo_tokenizer: Any, response_format: dict[str, Any], check: Any
) -> None:
    run = pipeline(vllm_engine, demo_tokenizer, sampling=Sampling(seed=5))
    spec = structured_output_from_dict(response_format)
    result = await run.run(MESSAGES, "none", spec, request_id=rid())
    assert [p.name for p in result.passes] == ["final"]
    assert result.thinking == "" and result.thinking_budget == 0
    assert check(result.content), result.content
    assert result.usage == result.passes[0].usage


@pytest.mark.vllm
async def test_a_thinking_pass_ends_at_the_close_tag_without_a_cutoff_notice(
    vllm_engine: Any, demo_tokenizer: Any
) -> None:
    close_id = demo_tokenizer.encode("</think>", add_special_tokens=False)[0]
    run = pipeline(vllm_engine, demo_tokenizer, sampling=Sampling(seed=1, logit_bias={close_id: 100.0}))
    result = await run.run(MESSAGES, "medium", StructuredOutput.choice(["yes", "no"]), request_id=rid())
    think, _, check, _ = result.passes
    for thinking_pass in (think, check):
        assert thinking_pass.usage.completion_tokens == 1 and not thinking_pass.hit_budget
    assert DEFAULT_CUTOFF_NOTICE not in result.thinking
    assert result.content in ("yes", "no")
    assert vllm_engine.num_unfinished_requests() == 0  # the pass closed its stream at the tag: aborted


@pytest.mark.vllm
async def test_cancelling_the_pipeline_aborts_the_running_pass(vllm_engine: Any, demo_tokenizer: Any) -> None:
    sampling = Sampling(seed=2, logit_bias=banned(demo_tokenizer, "</think>"))
    run = pipeline(
        vllm_engine, demo_tokenizer, sampling=sampling, budgets={"none": 0, "low": 1, "medium": 1, "high": 3000}
    )
    task = asyncio.create_task(run.run(MESSAGES, "high", None, request_id=rid()))
    for _ in range(2000):
        if vllm_engine.num_unfinished_requests() == 1:
            break
        await asyncio.sleep(0.005)
    assert vllm_engine.num_unfinished_requests() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert vllm_engine.num_unfinished_requests() == 0


async def test_budgets_are_clamped_to_the_context_or_refused(demo_tokenizer: Any) -> None:
    engine = FakeEngine(tokenizer=demo_tokenizer, seed=4)
    free = pipeline(engine, demo_tokenizer, final_max_tokens=8, max_model_len=None)
    prompt_len = len(render_ids(demo_tokenizer, MESSAGES))
    context = prompt_len + free._overhead() + 2 * 8 + 2 * 5  # room for 5 thinking tokens per pass
    tight = pipeline(engine, demo_tokenizer, final_max_tokens=8, max_model_len=context)
    result = await tight.run(MESSAGES, "high", StructuredOutput.choice(["yes", "no"]), request_id=rid())
    assert result.thinking_budget == 5
    assert [p.max_tokens for p in result.passes if p.name in ("think", "check")] == [5, 5]
    assert all(p.usage.prompt_tokens + p.max_tokens <= context for p in result.passes)

    cramped = pipeline(engine, demo_tokenizer, final_max_tokens=8, max_model_len=prompt_len + 10)
    with pytest.raises(ContextTooLongError, match="shorten the messages"):
        await cramped.run(MESSAGES, "low", StructuredOutput.choice(["yes", "no"]), request_id=rid())
    assert engine.num_unfinished_requests() == 0


def test_response_formats_are_read_from_the_wire_shapes() -> None:
    schema = {"type": "object"}
    assert structured_output_from_dict({"type": "json_schema", "json_schema": {"schema": schema}}).spec == schema
    assert structured_output_from_dict({"type": "text"}) is None
    with pytest.raises(ValueError, match="unknown"):
        structured_output_from_dict({"type": "xml"})
    with pytest.raises(ValueError, match="non-empty"):
        structured_output_from_dict({"type": "choice", "choices": []})


async def test_the_pipeline_runs_on_trt_with_choice_compiled_to_a_regex(trt_engine: Any) -> None:
    tokenizer = trt_engine.tokenizer
    sampling = Sampling(seed=9, logit_bias=banned(tokenizer, "</think>"))
    run = pipeline(trt_engine, tokenizer, sampling=sampling, budgets={"none": 0, "low": 6, "medium": 6, "high": 6})
    result = await run.run(MESSAGES, "low", StructuredOutput.choice(["sunny", "rainy"]), request_id=rid())
    assert [p.name for p in result.passes] == ["think", "draft", "check", "final"]
    assert result.content in ("sunny", "rainy")
    assert all(p.usage.completion_tokens == 6 for p in result.passes if p.name in ("think", "check"))
    assert trt_engine.num_unfinished_requests() == 0
