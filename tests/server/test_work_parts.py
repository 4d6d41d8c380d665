"""The parts every route shares, in isolation: the one `Generation` constructor (it works out the thinking
state from the prompt ids), the runtime's once-only terminal guard, and the `/ws/completions` pass runner
that returns its failure, mapped once."""

from __future__ import annotations

from typing import Any

import pytest

from yap_engines import ChatRequest, FakeEngine, Sampling
from yap_engines.adapters.fake import FakeTokenizer
from yap_engines.errors import GenerationError
from yap_engines.reasoning import ReasoningPipeline
from yap_server.completions.route import Passes
from yap_server.connection import Terminal
from yap_server.streaming import Generation

from .test_coalescing import QuietTelemetry

THINKING_PROMPT = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n"
PLAIN_PROMPT = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def built(prompt: str | None, *, streamed: bool = True) -> Generation:
    tokenizer = FakeTokenizer()
    ids = tokenizer.encode(prompt) if prompt is not None else [1, 2]
    request = ChatRequest("r", ids, Sampling())
    telemetry: Any = QuietTelemetry()
    return Generation.for_prompt(
        FakeEngine(), request, tokenizer if prompt is not None else None, telemetry, streamed=streamed
    )


@pytest.mark.parametrize("streamed", [True, False])
def test_a_prompt_that_opens_a_think_block_starts_the_reply_in_reasoning(streamed: bool) -> None:
    assert built(THINKING_PROMPT, streamed=streamed).opens_thinking is True


def test_without_an_open_think_block_a_streamed_reply_decides_eagerly_and_a_whole_one_at_the_end() -> None:
    assert built(PLAIN_PROMPT, streamed=True).opens_thinking is False
    assert built(PLAIN_PROMPT, streamed=False).opens_thinking is None


def test_without_a_tokenizer_the_prompt_is_not_inspected() -> None:
    assert built(None).opens_thinking is False


async def test_the_built_generation_splits_reasoning_from_the_answer() -> None:
    tokenizer = FakeTokenizer()
    request = ChatRequest("r", tokenizer.encode(THINKING_PROMPT), Sampling())
    engine = FakeEngine(text="mulling it over </think> the answer")
    telemetry: Any = QuietTelemetry()
    generation = Generation.for_prompt(engine, request, tokenizer, telemetry, reasoning=True)

    class Collect:
        reasoning = ""

        async def emit(self, piece: Any) -> bool:
            Collect.reasoning += piece.reasoning
            return True

    await generation.run(Collect())
    assert generation.content.strip() == "the answer"
    assert Collect.reasoning.strip() == "mulling it over"


def test_the_terminal_guard_lets_exactly_one_terminal_frame_out() -> None:
    terminal = Terminal()
    assert not terminal.sent
    assert terminal.claim() is True
    assert terminal.sent
    assert terminal.claim() is False
    assert terminal.claim() is False


async def test_a_failed_pass_returns_its_error_and_keeps_the_failure_mapped_once() -> None:
    engine = FakeEngine(text="one two three four five", fail_after=2)
    telemetry: Any = QuietTelemetry()
    passes = Passes(engine, telemetry)  # type: ignore[arg-type]

    async def keep(delta: Any) -> bool:
        return True

    error = await passes(ChatRequest("p", [1, 2], Sampling()), keep)
    assert isinstance(error, GenerationError)
    assert passes.failure is not None and passes.failure.code == "engine_error"
    assert engine.num_unfinished_requests() == 0

    pipeline = ReasoningPipeline(engine, FakeTokenizer(), runner=passes, max_model_len=4096)
    with pytest.raises(GenerationError):  # the pipeline stops at the failed pass and raises its error
        await pipeline.run([{"role": "user", "content": "hi"}], "none", None, request_id="j")
    assert passes.failure is not None and passes.failure.code == "engine_error"


async def test_a_clean_pass_returns_nothing_and_clears_the_failure() -> None:
    telemetry: Any = QuietTelemetry()
    passes = Passes(FakeEngine(text="fine"), telemetry)  # type: ignore[arg-type]

    async def keep(delta: Any) -> bool:
        return True

    assert await passes(ChatRequest("p", [1, 2], Sampling()), keep) is None
    assert passes.failure is None
