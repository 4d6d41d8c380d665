"""Thinking effort with guided decoding: think → guided draft → correction think → guided final.

`ReasoningPipeline.run(messages, effort, response_format)` renders `messages` with the model's chat
template and prefills the assistant turn with an explicit think block, then runs up to four passes
on any `InferenceEngine`:

1. **think**: `<think>\\n` is prefilled; the model thinks for at most the effort's budget and stops
   at `</think>`. When the budget runs out first, `cutoff_notice` is appended and the block is closed.
2. **draft**: with that thinking closed, a guided answer (the `StructuredOutput` constraint).
3. **check**: the think block is reopened with the draft and "Wait, have I made a mistake?"; the
   model re-reads it for at most the same budget.
4. **final**: with all of that thinking closed, the guided answer that is returned.

Effort `none` prefills an empty think block (`<think>\\n\\n</think>\\n\\n`) and runs one guided pass.
Each prompt extends the previous one, so the prefix cache serves the shared part. The thinking
budgets are clamped so that the worst case of every pass fits the model's context; when even an
answer cannot fit, `ContextTooLongError` says what to shorten. Cancelling the task that runs the
pipeline closes the running pass's stream, which aborts its engine request.

Every pass reads its stream through `runner` (default: `protocol.consume`, the one stream loop); the
server passes its generation pipeline there, so passes get its telemetry and error mapping. A runner
returns the engine error that ended its pass (or raises it); either way the pipeline stops with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .chat import Message, render_ids
from .errors import ContextTooLongError, EngineError, GenerationError, InvalidRequestError
from .protocol import InferenceEngine, OnDelta, consume
from .thinking import CLOSE_TAG, OPEN_TAG
from .types import ChatRequest, Delta, FinishReason, Sampling, StructuredOutput, Usage, normalize_json

Effort = Literal["none", "low", "medium", "high"]
EFFORTS: tuple[Effort, ...] = ("none", "low", "medium", "high")
DEFAULT_BUDGETS: Mapping[str, int] = {"none": 0, "low": 500, "medium": 2000, "high": 16000}

THINK_PREFILL = OPEN_TAG + "\n"
EMPTY_THINK = OPEN_TAG + "\n\n" + CLOSE_TAG + "\n\n"
CLOSE_THINK = "\n" + CLOSE_TAG + "\n\n"
DRAFT_INTRO = "\n\nMy draft answer:\n"
CHECK_PROMPT = "\n\nWait, have I made a mistake?"
DEFAULT_CUTOFF_NOTICE = "\n\n(Thinking budget reached; I will answer with what I have.)"

PassRunner = Callable[[ChatRequest, OnDelta], Awaitable[EngineError | None]]
"""Runs one pass: streams `request` and hands each delta to the callback (False stops it). Returns the
engine error that ended the pass (None: it ended cleanly); the pipeline stops there and raises it."""


@dataclass(frozen=True)
class PassReport:
    """One engine pass: its name (think, draft, check, final), token cap, usage and how it ended.

    `hit_budget` is True for a thinking pass that ran out of budget (and got the cut-off notice).
    """

    name: str
    max_tokens: int
    usage: Usage
    finish_reason: FinishReason
    hit_budget: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_tokens": self.max_tokens,
            "finish_reason": self.finish_reason,
            "hit_budget": self.hit_budget,
            **self.usage.as_dict(),
        }


@dataclass(frozen=True)
class ReasoningResult:
    """The final answer, all the thinking that led to it, and the passes that produced them."""

    content: str
    thinking: str
    finish_reason: FinishReason
    thinking_budget: int
    passes: tuple[PassReport, ...]

    @property
    def usage(self) -> Usage:
        """Usage summed over every pass."""
        return sum((p.usage for p in self.passes), Usage(0, 0))


@dataclass(frozen=True)
class _PassOutput:
    text: str
    report: PassReport


class ReasoningPipeline:
    """Runs the thinking-effort passes on `engine`, rendering prompts with `tokenizer`'s chat template.

    `budgets` maps each effort to its thinking tokens (`none` must be 0). `final_max_tokens` caps
    each answer pass. `max_model_len` is the context length (default: the engine's `max_model_len`;
    None means unbounded). `sampling` is the base for every pass (its `max_tokens` is replaced).
    `runner` reads each pass's stream (default: `consume` on `engine`).
    """

    def __init__(
        self,
        engine: InferenceEngine,
        tokenizer: Any,
        *,
        budgets: Mapping[str, int] = DEFAULT_BUDGETS,
        final_max_tokens: int = 2048,
        max_model_len: int | None = None,
        sampling: Sampling | None = None,
        cutoff_notice: str = DEFAULT_CUTOFF_NOTICE,
        runner: PassRunner | None = None,
    ) -> None:
        if final_max_tokens < 1:
            raise ValueError("final_max_tokens must be at least 1 (FINAL_MAX_TOKENS)")
        if budgets.get("none", 0) != 0 or any(budgets.get(e, -1) < 0 for e in EFFORTS[1:]):
            raise ValueError(f"budgets must give none=0 and a non-negative budget for {EFFORTS[1:]}")
        self.engine = engine
        self.tokenizer = tokenizer
        self.budgets = dict(budgets)
        self.final_max_tokens = final_max_tokens
        self.max_model_len = max_model_len if max_model_len is not None else engine.max_model_len
        self.runner: PassRunner = runner or self._consume
        self.sampling = sampling or Sampling()
        self.cutoff_notice = cutoff_notice
        close_ids = self._encode(CLOSE_TAG)
        # A single-token `</think>` is a special token on many models: detokenizers that skip special
        # tokens hide it from the text, so the thinking passes also watch for its id.
        self._close_id = close_ids[0] if len(close_ids) == 1 else None

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    async def _consume(self, request: ChatRequest, on_delta: OnDelta) -> EngineError | None:
        """The default runner: `consume` on the engine (its errors propagate as raised)."""
        await consume(self.engine, request, on_delta)
        return None

    async def _pass(self, request: ChatRequest, on_delta: OnDelta) -> None:
        """Run one pass through `runner`; an engine error it returns ends the pipeline."""
        error = await self.runner(request, on_delta)
        if error is not None:
            raise error

    async def run(
        self,
        messages: Sequence[Message],
        effort: str,
        response_format: StructuredOutput | None,
        *,
        request_id: str,
        max_tokens: int | None = None,
    ) -> ReasoningResult:
        """Run the passes for `effort` and return the final (guided) answer with its thinking.

        `max_tokens` caps the answer passes (at most `final_max_tokens`, the default).
        """
        if effort not in EFFORTS:
            raise InvalidRequestError(f"thinking_effort {effort!r} is not one of {', '.join(EFFORTS)}")
        answer_cap = self.final_max_tokens if max_tokens is None else max_tokens
        if not 1 <= answer_cap <= self.final_max_tokens:
            raise InvalidRequestError(f"max_tokens {answer_cap} is out of range [1, {self.final_max_tokens}]")
        if not messages:
            raise InvalidRequestError("messages is empty: send at least one message")
        base = render_ids(self.tokenizer, messages)
        if effort == "none":
            prompt = base + self._encode(EMPTY_THINK)
            self._fit(len(prompt), answer_cap, answers=1)
            final = await self._answer("final", prompt, response_format, answer_cap, request_id)
            return ReasoningResult(
                self._content(final.text, response_format), "", final.report.finish_reason, 0, (final.report,)
            )
        budget = self._clamped_budget(len(base), self.budgets[effort], answer_cap)
        thinking = ""
        prefix = base + self._encode(THINK_PREFILL)
        think = await self._think("think", prefix, budget, request_id)
        thinking += think.text
        draft = await self._answer(
            "draft", prefix + self._encode(thinking + CLOSE_THINK), response_format, answer_cap, request_id
        )
        thinking += DRAFT_INTRO + draft.text + CHECK_PROMPT
        check = await self._think("check", prefix + self._encode(thinking), budget, request_id)
        thinking += check.text
        final = await self._answer(
            "final", prefix + self._encode(thinking + CLOSE_THINK), response_format, answer_cap, request_id
        )
        passes = (think.report, draft.report, check.report, final.report)
        return ReasoningResult(
            self._content(final.text, response_format), thinking, final.report.finish_reason, budget, passes
        )

    # -- context budgeting -------------------------------------------------------------------------
    def _overhead(self) -> int:
        """Tokens of the fixed text the passes add around the generated parts (plus re-encoding slack)."""
        fixed = THINK_PREFILL + self.cutoff_notice * 2 + CLOSE_THINK + DRAFT_INTRO + CHECK_PROMPT
        return len(self._encode(fixed)) + 16

    def _fit(self, prompt_len: int, answer_cap: int, *, answers: int) -> None:
        limit = self.max_model_len
        if limit is not None and prompt_len + answers * answer_cap > limit:
            raise ContextTooLongError(
                f"the prompt is {prompt_len} tokens and {answers} answer(s) of up to {answer_cap} tokens must follow "
                f"it, over the model's context of {limit} tokens: shorten the messages or lower max_tokens"
            )

    def _clamped_budget(self, base_len: int, budget: int, answer_cap: int) -> int:
        """The thinking budget per pass, lowered so that the worst case of all four passes fits the context."""
        limit = self.max_model_len
        if limit is None:
            return budget
        fixed = base_len + self._overhead()
        # The final prompt holds both thinking passes and the draft; the final answer follows it.
        self._fit(fixed, answer_cap, answers=2)
        room = (limit - fixed - 2 * answer_cap) // 2
        if room < 1:
            raise ContextTooLongError(
                f"no room to think: the prompt ({base_len} tokens) and two answers of up to {answer_cap} tokens "
                f"leave nothing of the model's context of {limit} tokens; shorten the messages, lower max_tokens "
                "or use thinking_effort none"
            )
        return min(budget, room)

    def _room(self, prompt_len: int, cap: int) -> int:
        if self.max_model_len is None:
            return cap
        room = min(cap, self.max_model_len - prompt_len)
        if room < 1:
            raise ContextTooLongError(
                f"the prompt grew to {prompt_len} tokens, the whole context of {self.max_model_len}: "
                "shorten the messages or lower the thinking budget"
            )
        return room

    # -- passes ------------------------------------------------------------------------------------
    async def _think(self, name: str, prompt: list[int], budget: int, request_id: str) -> _PassOutput:
        """A thinking pass: at most `budget` tokens, ending at `</think>`; a cut-off notice when it overruns."""
        cap = self._room(len(prompt), budget)
        sampling = dataclasses.replace(self.sampling, max_tokens=cap, stop=(CLOSE_TAG,))
        request = ChatRequest(f"{request_id}-{name}", prompt, sampling)
        text, count, closed = "", 0, False
        finish: FinishReason = "stop"
        usage: Usage | None = None

        async def on_delta(delta: Delta) -> bool:
            nonlocal text, count, closed, finish, usage
            ids = delta.token_ids
            if self._close_id is not None and self._close_id in ids:
                # Keep what came before the tag; stopping closes the stream (abort).
                cut = ids.index(self._close_id)
                text += self.tokenizer.decode(ids[:cut], skip_special_tokens=True) if cut else ""
                count += cut + 1
                closed = True
                return False
            text += delta.text
            count += len(ids)
            if delta.finished:
                finish, usage = delta.finish_reason or "stop", delta.usage
            return True

        await self._pass(request, on_delta)
        if CLOSE_TAG in text:
            text, closed = text[: text.index(CLOSE_TAG)], True
        hit_budget = not closed and finish == "length"
        if finish in ("cancelled", "error") and not closed:
            raise GenerationError(f"the {name} pass ended with {finish!r} before its thinking was done")
        if hit_budget:
            text += self.cutoff_notice
        if usage is None or closed:
            usage = Usage(len(prompt), count, usage.cached_tokens if usage else 0)
        return _PassOutput(text, PassReport(name, cap, usage, "length" if hit_budget else "stop", hit_budget))

    async def _answer(
        self, name: str, prompt: list[int], response_format: StructuredOutput | None, cap: int, request_id: str
    ) -> _PassOutput:
        """A guided answer pass (the whole reply, constrained by `response_format`)."""
        cap = self._room(len(prompt), cap)
        sampling = dataclasses.replace(self.sampling, max_tokens=cap, stop=())
        request = ChatRequest(f"{request_id}-{name}", prompt, sampling, structured_output=response_format)
        text = ""
        finish: FinishReason = "stop"
        usage = Usage(len(prompt), 0)

        async def on_delta(delta: Delta) -> bool:
            nonlocal text, finish, usage
            text += delta.text
            if delta.finished:
                finish, usage = delta.finish_reason or "stop", delta.usage or usage
            return True

        await self._pass(request, on_delta)
        return _PassOutput(text, PassReport(name, cap, usage, finish))

    @staticmethod
    def _content(text: str, response_format: StructuredOutput | None) -> str:
        """JSON answers re-serialised strictly (guided JSON may carry raw control characters)."""
        if response_format is not None and response_format.kind in ("json_schema", "json_object"):
            with contextlib.suppress(ValueError):
                return normalize_json(text)
        return text


def structured_output_from_dict(spec: Mapping[str, Any] | None) -> StructuredOutput | None:
    """A `response_format` mapping as `StructuredOutput` (None: unconstrained text).

    Accepted: `{"type": "json_schema", "json_schema": {"schema": {...}}}` (OpenAI's shape) or
    `{"type": "json_schema", "schema": {...}}`; `{"type": "json_object"}`; `{"type": "regex", "regex": "..."}`;
    `{"type": "choice", "choices": [...]}`; `{"type": "grammar", "grammar": "<EBNF>"}`; `{"type": "text"}`.
    """
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise InvalidRequestError("response_format must be an object with a type")
    kind = spec.get("type")
    if kind == "text":
        return None
    if kind == "json_schema":
        wrapped = spec.get("json_schema")
        schema = wrapped.get("schema") if isinstance(wrapped, Mapping) else spec.get("schema")
        if schema is None:
            raise InvalidRequestError('response_format json_schema needs "json_schema": {"schema": {...}}')
        return StructuredOutput.json_schema(schema)
    if kind == "json_object":
        return StructuredOutput.json_object()
    if kind == "choice":
        return StructuredOutput.choice(spec.get("choices") or spec.get("choice") or ())
    if kind in ("regex", "grammar"):
        return StructuredOutput(kind, spec.get(kind))
    raise InvalidRequestError(
        f"response_format type {kind!r} is unknown; use json_schema, json_object, regex, choice, grammar or text"
    )
