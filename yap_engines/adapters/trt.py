"""`TrtEngine`: the seam on TensorRT-LLM's LLM API (`tensorrt_llm.LLM`, PyTorch backend; 1.2.x).

Token ids in, deltas out: `generate_async(ids, params, streaming=True)` returns one result updated
in place, whose `text_diff`/`token_ids_diff` become deltas. Cancelling or closing the stream calls
`result.abort()` (TensorRT-LLM aborts by result object, so request ids are mapped to results).
Sampling is translated with nothing dropped: `max_tokens` and temperature/top-p/top-k are always
explicit (TensorRT-LLM otherwise stops at 32 tokens, greedily), `logit_bias` becomes an
`embedding_bias` tensor over the vocabulary, `choice` becomes an anchored regex. A prebuilt engine
dir (config.json with `build_config`, `rank*.engine`) runs on the TensorRT-engine backend instead.

Weights dtype: `YAP_DTYPE=auto` is bfloat16 (TensorRT-LLM runs on a GPU). Warms (`prefill`): block
reuse keeps whole KV blocks of `tokens_per_block`, so a warm sends the prompt's whole blocks with
`max_tokens=1` and drops the token; the LLM API has no request priority, so it runs as any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..dtype import DtypeChoice, choose_dtype
from ..errors import (
    BackendUnavailableError,
    ContextTooLongError,
    EngineDeadError,
    EngineError,
    GenerationError,
    InvalidRequestError,
    InvalidSamplingError,
    UnsupportedFeature,
)
from ..protocol import PrefillResult
from ..settings import SettingsError
from ..types import ChatRequest, Delta, EngineHealth, FinishReason, Sampling, StructuredOutput, Usage
from ._text import held_back

if TYPE_CHECKING:
    from ..settings import EngineSettings

log = logging.getLogger("yap.engines.trt")

try:
    import tensorrt_llm
    from tensorrt_llm import LLM, SamplingParams
    from tensorrt_llm.llmapi import BuildConfig, GuidedDecodingParams, KvCacheConfig, RequestError
except ImportError as exc:
    raise BackendUnavailableError(
        "TensorRT-LLM is not installed (it needs an NVIDIA GPU): run the TensorRT-LLM image built from "
        'docker/trt/Dockerfile, or on a CUDA host `pip install "yap[trt]" --extra-index-url https://pypi.nvidia.com` '
        "(PyPI alone has only a stub of tensorrt-llm)"
    ) from exc

DEFAULT_MAX_NUM_TOKENS = 8192  # TensorRT-LLM's own default for the PyTorch backend
KV_CACHE_DTYPES = {"auto": "auto", "fp8": "fp8", "fp8_e4m3": "fp8"}

_FINISH: dict[str | None, FinishReason] = {None: "stop", "stop": "stop", "length": "length", "cancelled": "cancelled"}


def _engine_llm_class() -> Any:
    """The TensorRT-engine backend's `LLM` (prebuilt engine dirs, or TRT_LEGACY_ENGINE=true).

    The only private import of this adapter: upstream exposes that backend only as
    `tensorrt_llm._tensorrt_engine.LLM` since the PyTorch backend became the default.
    """
    from tensorrt_llm._tensorrt_engine import LLM as EngineLLM

    return EngineLLM


def is_engine_dir(model: str | Path) -> bool:
    """True for a prebuilt TensorRT engine dir: config.json with `build_config`, and `rank*.engine` files."""
    path = Path(model)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "build_config" in config and any(path.glob("rank*.engine"))


def baked_build_config(engine_dir: str | Path) -> dict[str, Any]:
    """The `build_config` a prebuilt engine was compiled with (limits fixed at build time)."""
    config: dict[str, Any] = json.loads((Path(engine_dir) / "config.json").read_text())
    return dict(config["build_config"])


def model_vocab_size(model: str, engine_dir: bool) -> int:
    """The model's vocabulary size (rows of its embedding, padding included): `embedding_bias` has this shape."""
    config_file = Path(model) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        if engine_dir:
            config = config["pretrained_config"]
        elif "vocab_size" not in config:  # a multimodal checkpoint: the language model's config
            config = config["text_config"]
        return int(config["vocab_size"])
    from transformers import AutoConfig  # a hub id; TensorRT-LLM has transformers, so this is no new dependency

    return int(AutoConfig.from_pretrained(model).get_text_config().vocab_size)


@dataclass(frozen=True)
class TrtLimits:
    """The sizes the engine runs with, resolved from settings and, for a prebuilt engine, its build."""

    max_batch_size: int  # the ceiling: TRT_MAX_BATCH_SIZE, or what a prebuilt engine was built with
    batch_size: int  # what runs at once: TRT_BATCH_SIZE, at most the ceiling
    max_num_tokens: int
    max_input_len: int
    max_output_len: int

    @property
    def max_seq_len(self) -> int:
        return self.max_input_len + self.max_output_len

    @classmethod
    def resolve(cls, settings: EngineSettings, baked: Mapping[str, Any] | None = None) -> TrtLimits:
        """Resolve and check the limits; a bad combination raises `SettingsError` naming the variable."""
        where = f" baked into the engine at {settings.resolved_model()}" if baked else " (TRT_MAX_BATCH_SIZE)"
        ceiling = int(baked["max_batch_size"]) if baked else settings.trt_max_batch_size
        batch_size = settings.trt_batch_size or ceiling
        if batch_size > ceiling:
            raise SettingsError(
                f"TRT_BATCH_SIZE={batch_size} is over the max batch size {ceiling}{where}; lower TRT_BATCH_SIZE"
                + (" or rebuild the engine with a larger TRT_MAX_BATCH_SIZE" if baked else "")
            )
        input_len = settings.trt_max_input_len or settings.chat_max_len
        output_len = settings.trt_max_output_len or settings.chat_max_out
        num_tokens = settings.trt_max_num_tokens or (int(baked["max_num_tokens"]) if baked else DEFAULT_MAX_NUM_TOKENS)
        if baked:
            for name, ours, built in (
                ("TRT_MAX_NUM_TOKENS", num_tokens, int(baked["max_num_tokens"])),
                ("TRT_MAX_INPUT_LEN (default CHAT_MAX_LEN)", input_len, int(baked["max_input_len"])),
                ("TRT_MAX_INPUT_LEN + TRT_MAX_OUTPUT_LEN", input_len + output_len, int(baked["max_seq_len"])),
            ):
                if ours > built:
                    raise SettingsError(f"{name} = {ours} is over the {built}{where}; lower it or rebuild the engine")
        elif input_len > num_tokens:
            raise SettingsError(
                f"TRT_MAX_NUM_TOKENS={num_tokens} is below TRT_MAX_INPUT_LEN={input_len}: TensorRT-LLM would refuse "
                "prompts that long; raise TRT_MAX_NUM_TOKENS"
            )
        return cls(ceiling, batch_size, num_tokens, input_len, output_len)


def use_engine_backend(settings: EngineSettings) -> bool:
    """Whether MODEL runs on the TensorRT-engine backend (TRT_LEGACY_ENGINE, else detected)."""
    model = settings.resolved_model()
    if settings.trt_legacy_engine is False and is_engine_dir(model):
        raise SettingsError(
            f"TRT_LEGACY_ENGINE=false, but MODEL={model} is a prebuilt TensorRT engine dir, which the PyTorch backend "
            "cannot load; unset TRT_LEGACY_ENGINE or point MODEL at a checkpoint"
        )
    return settings.trt_legacy_engine if settings.trt_legacy_engine is not None else is_engine_dir(model)


def trt_dtype(settings: EngineSettings) -> DtypeChoice:
    """`YAP_DTYPE` for TensorRT-LLM: `auto` is bfloat16, as on every GPU."""
    return choose_dtype(settings.dtype, accelerator=True, flags=())


def llm_kwargs(settings: EngineSettings, limits: TrtLimits, *, engine_backend: bool, prebuilt: bool) -> dict[str, Any]:
    """The keyword arguments of `LLM(...)`: every limit explicit, block reuse on, xgrammar enabled."""
    kv_dtype = KV_CACHE_DTYPES.get(settings.kv_dtype)
    if kv_dtype is None:
        raise SettingsError(f"KV_DTYPE={settings.kv_dtype} is not a TensorRT-LLM KV-cache dtype; use auto or fp8")
    free_fraction = settings.trt_kv_free_gpu_frac or settings.chat_gpu_frac
    kwargs: dict[str, Any] = {
        "model": settings.resolved_model(),
        "kv_cache_config": KvCacheConfig(
            enable_block_reuse=True, free_gpu_memory_fraction=free_fraction, dtype=kv_dtype
        ),
        "max_batch_size": limits.batch_size,
        "max_num_tokens": limits.max_num_tokens,
        "guided_decoding_backend": "xgrammar",
    }
    if prebuilt:  # lengths and dtype are baked into the engine; passing them again only logs warnings
        return kwargs
    kwargs.update(dtype=trt_dtype(settings).dtype, max_input_len=limits.max_input_len, max_seq_len=limits.max_seq_len)
    if engine_backend:  # TensorRT-LLM compiles an engine first: build it for the ceiling, run at batch_size
        kwargs["build_config"] = BuildConfig(
            max_batch_size=limits.max_batch_size,
            max_num_tokens=limits.max_num_tokens,
            max_input_len=limits.max_input_len,
            max_seq_len=limits.max_seq_len,
        )
    else:  # a PyTorch-backend field: STREAM_FLUSH_MS as tokens (`EngineSettings.stream_interval_tokens`),
        # so streamed outputs come every this many tokens (the first at once)
        kwargs["stream_interval"] = settings.stream_interval_tokens
    return kwargs


_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}")
_REGEX_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def choice_regex(options: Sequence[str]) -> str:
    """An anchored regex matching exactly one of `options` (escaped for xgrammar's regex dialect)."""

    def escape(text: str) -> str:
        return "".join(_REGEX_ESCAPES.get(c, "\\" + c if c in _REGEX_SPECIAL else c) for c in text)

    return "^(?:" + "|".join(escape(option) for option in options) + ")$"


def guided_decoding(spec: StructuredOutput) -> Any:
    """`GuidedDecodingParams` for a structured-output request; `choice` is compiled to a regex."""
    if spec.kind == "json_schema":
        return GuidedDecodingParams(json=spec.spec)
    if spec.kind == "json_object":
        return GuidedDecodingParams(json_object=True)
    if spec.kind == "regex":
        return GuidedDecodingParams(regex=spec.spec)
    if spec.kind == "choice":
        return GuidedDecodingParams(regex=choice_regex(spec.spec))
    if spec.kind == "grammar":
        return GuidedDecodingParams(grammar=spec.spec)
    raise UnsupportedFeature(f"{spec.kind} structured output", "trt")


def embedding_bias(logit_bias: Mapping[int, float], vocab_size: int) -> Any:
    """`logit_bias` as TensorRT-LLM's `embedding_bias`: a float32 tensor over the vocabulary, zero elsewhere."""
    import torch

    bias = torch.zeros(vocab_size, dtype=torch.float32)
    for token_id, value in logit_bias.items():
        if not 0 <= token_id < vocab_size:
            raise InvalidSamplingError("logit_bias", f"token id {token_id} is outside the vocabulary [0, {vocab_size})")
        bias[token_id] = value
    return bias


def sampling_params(request: ChatRequest, *, vocab_size: int, seed: int) -> Any:
    """Translate the request into TensorRT-LLM `SamplingParams`; every knob explicit, nothing dropped.

    `seed` is used when the request has none: TensorRT-LLM would otherwise sample every request
    with seed 0, so identical prompts would always get identical replies.
    """
    s = request.sampling
    return SamplingParams(
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k if s.top_k > 0 else 0,  # 0 means "all tokens" in TensorRT-LLM
        min_p=s.min_p,
        repetition_penalty=s.repetition_penalty,
        presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty,
        seed=s.seed if s.seed is not None else seed,
        stop=list(s.stop) or None,
        embedding_bias=embedding_bias(s.logit_bias, vocab_size) if s.logit_bias else None,
        guided_decoding=guided_decoding(request.structured_output) if request.structured_output else None,
    )


@contextlib.contextmanager
def _map_errors() -> Iterator[None]:
    try:
        yield
    except EngineError:
        raise
    except RequestError as exc:  # one request failed in the executor (a RuntimeError subclass)
        raise GenerationError(f"TensorRT-LLM failed this request: {exc}") from exc
    except ValueError as exc:  # argument checks in generate_async and SamplingParams
        raise InvalidRequestError(f"TensorRT-LLM rejected the request: {exc}") from exc
    except RuntimeError as exc:  # "LLM is shutting down", a failed executor
        raise EngineDeadError(f"TensorRT-LLM engine failed: {exc}") from exc


class TrtEngine:
    """An `InferenceEngine` over a `tensorrt_llm.LLM`. Build it with `from_settings`."""

    name = "trt"

    def __init__(
        self,
        llm: Any,
        *,
        limits: TrtLimits,
        vocab_size: int,
        model_id: str,
        seed: int = 0,
        tokens_per_block: int = 32,
        dtype_choice: DtypeChoice | None = None,
    ) -> None:
        self._llm = llm
        self.tokens_per_block = tokens_per_block
        self.dtype_choice = dtype_choice or DtypeChoice("auto", "the engine's own")
        self.limits = limits
        self.vocab_size = vocab_size
        self.model_id = model_id
        self._seeds = random.Random(seed)
        self._running: dict[str, Any] = {}
        self._closed = False
        self._dead: str | None = None

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> TrtEngine:
        """Start TensorRT-LLM for `settings` (slow: loads weights and warms up); limits are checked first."""
        model = settings.resolved_model()
        engine_backend = use_engine_backend(settings)
        prebuilt = engine_backend and is_engine_dir(model)
        limits = TrtLimits.resolve(settings, baked_build_config(model) if prebuilt else None)
        kwargs = llm_kwargs(settings, limits, engine_backend=engine_backend, prebuilt=prebuilt)
        llm_class = _engine_llm_class() if engine_backend else LLM
        choice = DtypeChoice("baked into the engine", "prebuilt engine") if prebuilt else trt_dtype(settings)
        log.info("TensorRT-LLM weights dtype: %s (%s)", choice.dtype, choice.reason)
        try:
            llm = llm_class(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"TensorRT-LLM could not start on {model}: {exc}") from exc
        if llm.tokenizer is None:
            llm.shutdown()
            raise EngineError(f"TensorRT-LLM found no tokenizer for {model}; put the model's tokenizer files there")
        return cls(
            llm,
            limits=limits,
            vocab_size=model_vocab_size(model, prebuilt),
            model_id=model,
            seed=settings.seed,
            tokens_per_block=int(kwargs["kv_cache_config"].tokens_per_block),
            dtype_choice=choice,
        )

    @property
    def llm(self) -> Any:
        """The underlying `tensorrt_llm.LLM` (for stats and debugging)."""
        return self._llm

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer (TensorRT-LLM wraps it; `.tokenizer` is the original)."""
        wrapped = self._llm.tokenizer
        return getattr(wrapped, "tokenizer", wrapped)

    @property
    def max_model_len(self) -> int:
        return self.limits.max_seq_len

    def num_unfinished_requests(self) -> int:
        """Requests started through this engine that have neither finished nor been aborted."""
        return len(self._running)

    def _params(self, request: ChatRequest) -> Any:
        prompt_len = len(request.prompt_token_ids)
        if prompt_len > self.limits.max_input_len:
            raise ContextTooLongError(
                f"the prompt is {prompt_len} tokens, over TRT_MAX_INPUT_LEN={self.limits.max_input_len}; "
                "shorten it or raise TRT_MAX_INPUT_LEN (default CHAT_MAX_LEN)"
            )
        # As with vLLM, a reply that would run past the context ends with "length".
        room = self.limits.max_seq_len - prompt_len
        if request.sampling.max_tokens > room:
            request = dataclasses.replace(request, sampling=dataclasses.replace(request.sampling, max_tokens=room))
        with _map_errors():
            return sampling_params(request, vocab_size=self.vocab_size, seed=self._seeds.getrandbits(63))

    @contextlib.contextmanager
    def _noting_death(self) -> Iterator[None]:
        try:
            with _map_errors():
                yield
        except EngineDeadError as exc:
            self._dead = str(exc)
            raise

    async def generate(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        if self._closed or self._dead is not None:
            raise EngineDeadError(f"the TensorRT-LLM engine is {'closed' if self._closed else 'dead'}")
        rid = request.request_id
        if rid in self._running:
            raise InvalidRequestError(f"request_id {rid!r} is already running; use a fresh id per request")
        params = self._params(request)
        with self._noting_death():
            result = self._llm.generate_async(list(request.prompt_token_ids), params, streaming=True)
        self._running[rid] = result
        stop = request.sampling.stop
        text, emitted = "", 0
        try:
            with self._noting_death():
                async for out in result:
                    choice = out.outputs[0]
                    if not out.finished:
                        text += choice.text_diff
                        # TensorRT-LLM cuts a stop string out only once it is complete; its first characters
                        # may already be here, so they are held back until the match is decided.
                        visible = len(text) - held_back(text, stop)
                        if visible > emitted or choice.token_ids_diff:
                            yield Delta(text[emitted:visible], tuple(choice.token_ids_diff))
                            emitted = max(emitted, visible)
                        continue
                    # The final text is authoritative: TensorRT-LLM cuts a stop string out of it.
                    usage = Usage(len(request.prompt_token_ids), len(choice.token_ids), out.cached_tokens or 0)
                    finish = _FINISH.get(choice.finish_reason, "error")  # "timeout" and the like
                    yield Delta(choice.text[emitted:], tuple(choice.token_ids_diff), finish, usage)
                    return
            raise GenerationError("TensorRT-LLM ended the stream without finishing the request")
        except (asyncio.CancelledError, GeneratorExit):
            self._abort_result(result)
            raise
        finally:
            self._running.pop(rid, None)

    @property
    def cache_block_size(self) -> int:
        """Tokens per KV-cache block (`tokens_per_block`): the unit of block reuse."""
        return self.tokens_per_block

    async def prefill(self, request: ChatRequest) -> PrefillResult:
        """Warm the prompt's whole blocks (`tokens_per_block`): one discarded greedy token. Cancelling aborts
        the request (`result.abort()`); blocks already computed stay reusable."""
        ids = list(request.prompt_token_ids)
        whole = len(ids) - len(ids) % self.tokens_per_block
        if whole == 0:
            return PrefillResult(len(ids), 0)
        warm = ChatRequest(request.request_id, ids[:whole], Sampling(temperature=0.0, max_tokens=1))
        async with contextlib.aclosing(self.generate(warm)) as stream:
            async for _ in stream:
                pass
        return PrefillResult(len(ids), whole)

    @staticmethod
    def _abort_result(result: Any) -> None:
        if not result.finished and not result.aborted():
            result.abort()

    async def abort(self, request_id: str) -> None:
        result = self._running.get(request_id)
        if result is not None:
            self._abort_result(result)

    async def health(self) -> EngineHealth:
        if self._closed:
            return EngineHealth(False, "TensorRT-LLM engine is closed")
        if self._dead is not None:
            return EngineHealth(False, self._dead)
        return EngineHealth(True, f"tensorrt_llm {tensorrt_llm.__version__}")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for result in list(self._running.values()):
            self._abort_result(result)
        await asyncio.to_thread(self._llm.shutdown)

    async def __aenter__(self) -> TrtEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
