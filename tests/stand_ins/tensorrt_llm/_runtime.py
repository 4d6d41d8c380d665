"""The stand-in's engine: a deterministic "model" and an in-flight-batching executor on asyncio.

Not part of the real API. The model's "weights" are seeded random logits over the vocabulary
(prompt-dependent, so different prompts differ), plus a liking for punctuation that grows with the
reply's length so that a guided JSON answer closes soon, as a trained model's would; like a trained model it never emits
half a UTF-8 character, a control character or a special token other than the end token. The executor admits at most
`max_batch_size` requests at once (the rest queue), reuses KV blocks of earlier prompts when block
reuse is on, and produces one token per running request per step.
"""

from __future__ import annotations

import asyncio
import json
import threading
import unicodedata
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import torch

from .executor import RequestError, RequestOutput, StepFinish, StepResponse
from .sampling_params import GuidedDecodingParams, SamplingParams

STEP_SECONDS = 0.001  # one decoding step of the whole batch
WRAP_UP_PER_TOKEN, WRAP_UP_MAX = 0.15, 4.0


class Model:
    """Scores the next token; knows the vocabulary size and which ids a chat model would never emit."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        prior = torch.zeros(vocab_size)
        self.punctuation = torch.zeros(vocab_size, dtype=torch.bool)
        never = set(range(len(tokenizer), vocab_size))  # padding rows of the embedding
        for token_id in range(len(tokenizer)):
            piece = tokenizer.decode([token_id])
            if not piece or "\ufffd" in piece or any(unicodedata.category(c) == "Cc" and c != "\n" for c in piece):
                never.add(token_id)  # a byte of a longer UTF-8 sequence, or a control character
            elif all(not c.isalnum() and not c.isspace() for c in piece):
                self.punctuation[token_id] = True
        never |= set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
        never.discard(tokenizer.eos_token_id)
        prior[sorted(never)] = float("-inf")
        self.prior = prior
        self._grammar_compiler: Any = None

    def compile_guide(self, guide: GuidedDecodingParams) -> Any:
        """An xgrammar matcher for `guide` (the library the real "xgrammar" backend runs)."""
        import xgrammar

        if self._grammar_compiler is None:
            info = xgrammar.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=[self.tokenizer.eos_token_id]
            )
            self._grammar_compiler = xgrammar.GrammarCompiler(info)
        compiler = self._grammar_compiler
        if guide.json_object:
            compiled = compiler.compile_builtin_json_grammar()
        elif guide.json is not None:
            schema = guide.json if isinstance(guide.json, str) else json.dumps(guide.json)
            compiled = compiler.compile_json_schema(schema, any_whitespace=False)
        elif guide.regex is not None:
            compiled = compiler.compile_regex(guide.regex)
        elif guide.grammar is not None:
            compiled = compiler.compile_grammar(guide.grammar)
        else:
            raise NotImplementedError("the stand-in supports json, json_object, regex and grammar guides")
        return xgrammar.GrammarMatcher(compiled)

    def next_token(self, request: RunningRequest) -> int:
        params = request.params
        logits = torch.randn(self.vocab_size, generator=request.generator) + self.prior
        # The longer the reply, the more the model likes punctuation: a guided JSON answer closes.
        logits[self.punctuation] += min(WRAP_UP_PER_TOKEN * len(request.generated), WRAP_UP_MAX)
        if params.embedding_bias is not None:
            logits = logits + params.embedding_bias
        _apply_penalties(logits, request)
        if request.matcher is not None:
            import xgrammar

            bitmask = xgrammar.allocate_token_bitmask(1, self.vocab_size)
            request.matcher.fill_next_token_bitmask(bitmask)
            xgrammar.apply_token_bitmask_inplace(logits, bitmask)
        if params._greedy_decoding:
            return int(torch.argmax(logits))
        logits = logits / (params.temperature if params.temperature is not None else 1.0)
        if params.top_k:
            kth = torch.topk(logits, min(params.top_k, self.vocab_size)).values[-1]
            logits[logits < kth] = float("-inf")
        probs = torch.softmax(logits, dim=-1)
        if params.top_p is not None and params.top_p < 1.0:
            ordered, order = torch.sort(probs, descending=True)
            outside = torch.cumsum(ordered, dim=-1) - ordered > params.top_p
            probs[order[outside]] = 0.0
        if params.min_p:
            probs[probs < params.min_p * probs.max()] = 0.0
        return int(torch.multinomial(probs, 1, generator=request.generator))


def _apply_penalties(logits: torch.Tensor, request: RunningRequest) -> None:
    params = request.params
    if params.repetition_penalty not in (None, 1.0):
        seen = torch.tensor(sorted(set(request.prompt) | set(request.generated)), dtype=torch.long)
        values = logits[seen]
        logits[seen] = torch.where(values > 0, values / params.repetition_penalty, values * params.repetition_penalty)
    counts = Counter(request.generated)
    for token_id, count in counts.items():
        logits[token_id] -= (params.presence_penalty or 0.0) + count * (params.frequency_penalty or 0.0)


@dataclass
class RunningRequest:
    """One request inside the executor."""

    request_id: int
    prompt: list[int]
    params: SamplingParams
    result: RequestOutput
    max_seq_len: int
    generator: torch.Generator
    matcher: Any = None
    generated: list[int] = field(default_factory=list)
    unsent: list[int] = field(default_factory=list)
    cached_tokens: int = 0
    aborted: bool = False


class Executor:
    """In-flight batching on the running asyncio loop; `shutdown()` may come from another thread."""

    def __init__(self, model: Model, *, max_batch_size: int, tokens_per_block: int, block_reuse: bool) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.tokens_per_block = tokens_per_block
        self.block_reuse = block_reuse
        self.peak_running = 0  # the most requests ever run in one step (for tests of batching)
        self._waiting: deque[RunningRequest] = deque()
        self._running: dict[int, RunningRequest] = {}
        self._blocks: set[tuple[int, ...]] = set()
        self._next_id = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._shut_down = threading.Event()

    def is_shutdown(self) -> bool:
        return self._shut_down.is_set()

    def next_request_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def submit(self, request: RunningRequest) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._loop, self._wakeup = loop, asyncio.Event()
            self._task = loop.create_task(self._run())
        if request.params.guided_decoding is not None:
            try:
                request.matcher = self.model.compile_guide(request.params.guided_decoding)
            except Exception as exc:  # the executor compiles the grammar; a bad one fails only this request
                request.result._enqueue(StepResponse([], 0, error=RequestError(f"grammar compilation failed: {exc}")))
                return
        self._waiting.append(request)
        assert self._wakeup is not None
        self._wakeup.set()

    def abort_request(self, request_id: int) -> None:
        for request in (*self._waiting, *self._running.values()):
            if request.request_id == request_id:
                request.aborted = True
        if self._wakeup is not None:
            self._wakeup.set()

    def running_request_ids(self) -> list[int]:
        return list(self._running)

    def shutdown(self) -> None:
        self._shut_down.set()
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)

    async def _run(self) -> None:
        assert self._wakeup is not None
        try:
            while True:
                self._admit()
                if not self._running:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                self.peak_running = max(self.peak_running, len(self._running))
                for request in list(self._running.values()):
                    self._step(request)
                await asyncio.sleep(STEP_SECONDS)
        except asyncio.CancelledError:
            for request in (*self._waiting, *self._running.values()):
                request.result._enqueue(StepResponse([], 0, error=RuntimeError("LLM is shutting down")))
            raise

    def _admit(self) -> None:
        while self._waiting and len(self._running) < self.max_batch_size:
            request = self._waiting.popleft()
            request.cached_tokens = self._reuse_blocks(request.prompt)
            self._running[request.request_id] = request

    def _reuse_blocks(self, prompt: list[int]) -> int:
        size = self.tokens_per_block
        reusable = (len(prompt) - 1) // size  # the last prompt token is always computed
        cached = 0
        if self.block_reuse:
            while cached < reusable and tuple(prompt[: (cached + 1) * size]) in self._blocks:
                cached += 1
            self._blocks.update(tuple(prompt[: (n + 1) * size]) for n in range(len(prompt) // size))
        return cached * size

    def _step(self, request: RunningRequest) -> None:
        if request.aborted:
            self._finish(request, "cancelled")
            return
        try:
            token = self.model.next_token(request)
        except Exception as exc:  # a failing request does not take the executor down
            self._running.pop(request.request_id, None)
            request.result._enqueue(StepResponse([], request.cached_tokens, error=RequestError(str(exc))))
            return
        params = request.params
        if request.matcher is not None and not request.matcher.accept_token(token):
            raise AssertionError("the grammar mask let a rejected token through")
        if token == params.end_id and not params.ignore_eos:
            self._finish(request, "end_id")
            return
        request.generated.append(token)
        request.unsent.append(token)
        if any(words and request.generated[-len(words) :] == words for words in params._get_stop_words()):
            self._finish(request, "stop_words")
        elif len(request.generated) >= params.max_tokens or len(request.prompt) + len(request.generated) >= (
            request.max_seq_len
        ):
            self._finish(request, "length")
        elif request.result._streaming:
            self._send(request, None)

    def _finish(self, request: RunningRequest, finish: StepFinish) -> None:
        self._running.pop(request.request_id, None)
        self._send(request, finish)

    def _send(self, request: RunningRequest, finish: StepFinish | None) -> None:
        tokens, request.unsent = request.unsent, []
        request.result._enqueue(StepResponse(tokens, request.cached_tokens, finish))


def seeded_generator(seed: int | None, prompt: list[int]) -> torch.Generator:
    """Sampling randomness: the request's seed (None means 0, as in the C++ runtime) and its prompt."""
    mixed = zlib.crc32(json.dumps([seed or 0, prompt]).encode())
    return torch.Generator().manual_seed(mixed)
