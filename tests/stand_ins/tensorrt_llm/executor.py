"""What `generate_async` returns: a `RequestOutput` updated in place, step by step (1.2.x semantics).

Mirrors `tensorrt_llm/executor/result.py`: token ids arrive as increments and are accumulated;
`text` is re-detokenized after each step (an unfinished UTF-8 sequence at the end is held back, as
the incremental detokenizer does); `text_diff`/`token_ids_diff` are what is new since the previous
step. A stop string found in the text cuts it, finishes the request with "stop" and aborts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal

from .sampling_params import SamplingParams


class RequestError(RuntimeError):
    """The error raised when the request is failed."""


@dataclass(slots=True)
class CompletionOutput:
    """One output sequence of a request; `text` and `token_ids` are cumulative."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float | None = None
    logprobs: list[Any] = field(default_factory=list)
    prompt_logprobs: list[Any] = field(default_factory=list)
    finish_reason: Literal["stop", "length", "timeout", "cancelled"] | None = None
    stop_reason: int | str | None = None
    generation_logits: Any = None
    additional_context_outputs: Any = None
    additional_generation_outputs: Any = None
    disaggregated_params: Any = None
    request_perf_metrics: Any = None

    _last_text_len: int = field(default=0, init=False, repr=False)
    _last_token_ids_len: int = field(default=0, init=False, repr=False)
    _last_logprobs_len: int = field(default=0, init=False, repr=False)

    @property
    def length(self) -> int:
        return len(self.token_ids)

    @property
    def text_diff(self) -> str:
        return self.text[self._last_text_len :]

    @property
    def token_ids_diff(self) -> list[int]:
        return self.token_ids[self._last_token_ids_len :]

    @property
    def logprobs_diff(self) -> list[Any]:
        return self.logprobs[self._last_logprobs_len :]


StepFinish = Literal["end_id", "stop_words", "length", "cancelled"]


@dataclass(frozen=True)
class StepResponse:
    """What the executor sends for one request after one step (the C++ `Response`, reduced)."""

    token_ids: list[int]
    cached_tokens: int
    finish: StepFinish | None = None
    error: BaseException | None = None

    @property
    def is_final(self) -> bool:
        return self.finish is not None or self.error is not None


class RequestOutput:
    """The output of one request: awaitable, and async-iterable (yielding itself after every step)."""

    def __init__(
        self,
        *,
        request_id: int,
        prompt_token_ids: list[int],
        sampling_params: SamplingParams,
        tokenizer: Any,
        abort_request: Callable[[int], None],
        streaming: bool,
    ) -> None:
        self._request_id = request_id
        self._prompt_token_ids = prompt_token_ids
        self.sampling_params = sampling_params
        self.tokenizer = tokenizer
        self._abort_request = abort_request
        self._streaming = streaming
        self._outputs = [CompletionOutput(0)]
        self._done = False
        self._aborted = False
        self._responses: asyncio.Queue[StepResponse] = asyncio.Queue()
        self.cached_tokens = 0
        self.decoding_iter = 0

    # -- the public surface --------------------------------------------------------------------
    @property
    def request_id(self) -> int:
        return self._request_id

    @property
    def prompt(self) -> str | None:
        return None

    @property
    def prompt_token_ids(self) -> list[int]:
        return self._prompt_token_ids

    @property
    def outputs(self) -> list[CompletionOutput]:
        return self._outputs[: self.sampling_params.n]

    @property
    def finished(self) -> bool:
        return self._done

    @property
    def context_logits(self) -> Any:
        return None

    def abort(self) -> None:
        """Abort the generation request."""
        self._abort_request(self.request_id)
        self._aborted = True

    def aborted(self) -> bool:
        return self._aborted

    def __aiter__(self) -> RequestOutput:
        return self

    async def __anext__(self) -> RequestOutput:
        if self._done:
            raise StopAsyncIteration
        self._handle_response(await self._responses.get())
        return self

    async def aresult(self) -> RequestOutput:
        while not self._done:
            self._handle_response(await self._responses.get())
        return self

    def __await__(self) -> Generator[Any, None, RequestOutput]:
        return self.aresult().__await__()

    # -- fed by the executor -------------------------------------------------------------------
    def _enqueue(self, response: StepResponse) -> None:
        self._responses.put_nowait(response)

    def _handle_response(self, response: StepResponse) -> None:
        if response.error is not None:
            self._done = True
            raise response.error
        output = self._outputs[0]
        params = self.sampling_params
        output._last_token_ids_len = len(output.token_ids)
        output.token_ids.extend(response.token_ids)
        self.cached_tokens = response.cached_tokens
        self.decoding_iter += 1
        self._done = response.is_final
        if response.finish == "cancelled":
            output.finish_reason = "cancelled"
        elif response.finish in ("end_id", "length"):
            output.finish_reason = "stop" if response.finish == "end_id" else "length"
        elif response.finish == "stop_words":
            output.finish_reason = "stop"
            for reason, stop_ids in params._get_stop_reasons_and_words():
                if stop_ids and output.token_ids[-len(stop_ids) :] == stop_ids:
                    output.stop_reason = reason
                    if not params.include_stop_str_in_output:
                        output.token_ids = output.token_ids[: -len(stop_ids)]
                    break
        if not params.detokenize or self.tokenizer is None:
            return
        output._last_text_len = len(output.text)
        text = self.tokenizer.decode(output.token_ids, skip_special_tokens=params.skip_special_tokens)
        output.text = text if self._done else text.rstrip("\ufffd")
        if not self._done or output.finish_reason in ("stop", "length"):
            for reason, _ in params._get_stop_reasons_and_words():
                if isinstance(reason, str) and reason in output.text:
                    cut = output.text.find(reason)
                    output.text = output.text[: cut + (len(reason) if params.include_stop_str_in_output else 0)]
                    output.finish_reason = "stop"
                    output.stop_reason = reason
                    self.abort()
                    self._done = True
                    break
