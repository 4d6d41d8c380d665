"""`LLM` (PyTorch backend) and `_TrtLLM` (TensorRT-engine backend): construction checks and `generate_async`.

Mirrors `tensorrt_llm/llmapi/llm.py` 1.2.x: every keyword must be a field of the backend's
`LlmArgs` (else `ValueError("<cls> got invalid argument: <key>")`); the PyTorch `LLM` also refuses
TensorRT-engine-only fields; a prebuilt engine's `build_config` caps the runtime `max_batch_size`
and `max_num_tokens` (with a warning, as upstream); guided decoding needs `guided_decoding_backend`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .._runtime import Executor, Model, RunningRequest, seeded_generator
from ..executor import RequestOutput
from ..sampling_params import SamplingParams
from .llm_args import BuildConfig, TorchLlmArgs, TrtLlmArgs

logger = logging.getLogger("tensorrt_llm")


class TransformersTokenizer:
    """The LLM's tokenizer: a thin wrapper whose `.tokenizer` is the Hugging Face tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_token_id(self) -> int | None:
        return self.tokenizer.pad_token_id  # type: ignore[no-any-return]

    def encode(self, text: str, *args: Any, **kwargs: Any) -> list[int]:
        return list(self.tokenizer.encode(text, *args, **kwargs))

    def decode(self, token_ids: list[int], *args: Any, **kwargs: Any) -> str:
        return str(self.tokenizer.decode(token_ids, *args, **kwargs))

    def apply_chat_template(self, conversation: Any, *args: Any, **kwargs: Any) -> Any:
        return self.tokenizer.apply_chat_template(conversation, *args, **kwargs)


class BaseLLM:
    """The shared constructor and request path of both backends."""

    _args_class: type[TorchLlmArgs] | type[TrtLlmArgs] = TrtLlmArgs

    def __init__(
        self,
        model: str | Path,
        tokenizer: Any = None,
        tokenizer_mode: str = "auto",
        skip_tokenizer_init: bool = False,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        revision: str | None = None,
        tokenizer_revision: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs = self._backend_kwargs(kwargs)
        valid_keys = set(self._args_class.model_fields) | {"_mpi_session", "backend"}
        for key in kwargs:
            if key not in valid_keys:
                raise ValueError(f"{self.__class__.__name__} got invalid argument: {key}")
        self.args = self._args_class.from_kwargs(
            model=model,
            tokenizer=tokenizer,
            tokenizer_mode=tokenizer_mode,
            skip_tokenizer_init=skip_tokenizer_init,
            trust_remote_code=trust_remote_code,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            revision=revision,
            tokenizer_revision=tokenizer_revision,
            **kwargs,
        )
        self._executor: Executor | None = None
        self._tokenizer: TransformersTokenizer | None = None
        self._build_model()

    # -- subclass hooks ------------------------------------------------------------------------
    def _backend_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return kwargs

    def _build_model(self) -> None:
        raise NotImplementedError

    def _check_arguments(self, prompt_len: int, params: SamplingParams) -> None:
        raise NotImplementedError

    # -- the public surface --------------------------------------------------------------------
    @property
    def tokenizer(self) -> TransformersTokenizer | None:
        return self._tokenizer

    def generate_async(
        self,
        inputs: Any,
        sampling_params: SamplingParams | None = None,
        lora_request: Any = None,
        prompt_adapter_request: Any = None,
        streaming: bool = False,
        kv_cache_retention_config: Any = None,
        disaggregated_params: Any = None,
        _postproc_params: Any = None,
        scheduling_params: Any = None,
        cache_salt: str | None = None,
    ) -> RequestOutput:
        """Submit one prompt (token ids, a text, or a prompt dict); returns at once."""
        if self._executor is None or self._executor.is_shutdown():
            raise RuntimeError("LLM is shutting down")
        unsupported = {
            "lora_request": lora_request,
            "prompt_adapter_request": prompt_adapter_request,
            "disaggregated_params": disaggregated_params,
        }
        if any(value is not None for value in unsupported.values()):
            raise NotImplementedError("the stand-in does not simulate LoRA, prompt adapters or disaggregation")
        params = self._prepare_sampling_params(sampling_params)
        prompt = self._prompt_token_ids(inputs, params)
        self._check_arguments(len(prompt), params)
        if params.guided_decoding is not None and self.args.guided_decoding_backend is None:
            # The real executor refuses it the same way: no grammar backend was set up at start.
            raise ValueError("guided decoding is not enabled: construct the LLM with guided_decoding_backend")
        model = self._executor.model
        bias = params.embedding_bias
        if bias is not None and (bias.dim() != 1 or bias.shape[0] != model.vocab_size or not bias.is_floating_point()):
            shape = tuple(bias.shape)
            raise ValueError(f"embedding_bias must be a float tensor of shape [{model.vocab_size}], got {shape}")
        if params.n != 1 or params.use_beam_search:
            raise NotImplementedError("the stand-in generates one sequence per request")
        executor = self._executor
        result = RequestOutput(
            request_id=executor.next_request_id(),
            prompt_token_ids=prompt,
            sampling_params=params,
            tokenizer=self._tokenizer,
            abort_request=executor.abort_request,
            streaming=streaming,
        )
        executor.submit(
            RunningRequest(
                request_id=result.request_id,
                prompt=prompt,
                params=params,
                result=result,
                max_seq_len=self.args.max_seq_len,
                generator=seeded_generator(params.seed, prompt),
            )
        )
        return result

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def __enter__(self) -> BaseLLM:
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> bool:
        self.shutdown()
        return False

    # -- helpers -------------------------------------------------------------------------------
    def _prepare_sampling_params(self, sampling_params: SamplingParams | None) -> SamplingParams:
        if sampling_params is None:
            sampling_params = SamplingParams()
        if not isinstance(sampling_params, SamplingParams):
            raise TypeError(f"The sampling_params must be type SamplingParams or None, but got {type(sampling_params)}")
        if sampling_params.end_id is None:
            if self._tokenizer is None:
                raise ValueError("tokenizer is required to reset end_id if it is None")
            sampling_params._setup(self._tokenizer)
        return sampling_params

    def _prompt_token_ids(self, inputs: Any, params: SamplingParams) -> list[int]:
        if isinstance(inputs, dict) and "prompt_token_ids" in inputs:
            inputs = inputs["prompt_token_ids"]
        elif isinstance(inputs, dict) and "prompt" in inputs:
            inputs = inputs["prompt"]
        if isinstance(inputs, str):
            if self._tokenizer is None:
                raise ValueError("a text prompt needs a tokenizer")
            return self._tokenizer.encode(inputs, add_special_tokens=params.add_special_tokens)
        if isinstance(inputs, list) and all(isinstance(t, int) for t in inputs):
            return list(inputs)
        raise TypeError(f"The inputs must be type str or list of int, but got {type(inputs)}")

    def _start(self, model_dir: Path, vocab_size: int, max_batch_size: int) -> None:
        from transformers import AutoTokenizer

        source = self.args.tokenizer if self.args.tokenizer is not None else model_dir
        hf_tokenizer = AutoTokenizer.from_pretrained(str(source))
        self._tokenizer = TransformersTokenizer(hf_tokenizer)
        kv = self.args.kv_cache_config
        self._executor = Executor(
            Model(hf_tokenizer, vocab_size),
            max_batch_size=max_batch_size,
            tokens_per_block=kv.tokens_per_block,
            block_reuse=kv.enable_block_reuse,
        )


class _TorchLLM(BaseLLM):
    """The PyTorch backend: loads a Hugging Face (or ModelOpt-exported) checkpoint directly."""

    _args_class = TorchLlmArgs

    def _backend_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        trt_only = set(TrtLlmArgs.model_fields) - set(TorchLlmArgs.model_fields)
        passed = [key for key in kwargs if key in trt_only]
        if passed:
            raise ValueError(
                f"The following arguments are specific to TensorRT backend and cannot be used with PyTorch "
                f"backend: {passed}.\nPlease use 'from tensorrt_llm._tensorrt_engine import LLM' instead to use "
                "the TensorRT backend."
            )
        return {**kwargs, "backend": kwargs.get("backend", "pytorch")}

    def _build_model(self) -> None:
        args = self.args
        if args.guided_decoding_backend not in (None, "xgrammar", "llguidance"):
            raise ValueError(f"Unsupported guided decoding backend {args.guided_decoding_backend}")
        model_dir = Path(args.model)
        config = json.loads((model_dir / "config.json").read_text())
        if "build_config" in config:
            raise ValueError(f"{model_dir} is a TensorRT engine dir, which the PyTorch backend cannot load")
        # Unset limits come from a default BuildConfig, as upstream's validators fill them in.
        defaults = BuildConfig()
        args.max_batch_size = args.max_batch_size or defaults.max_batch_size
        args.max_seq_len = args.max_seq_len or config.get("max_position_embeddings", 2048)
        self._start(model_dir, int(config["vocab_size"]), args.max_batch_size)

    def _check_arguments(self, prompt_len: int, params: SamplingParams) -> None:
        max_num_tokens = self.args.max_num_tokens
        if not self.args.enable_chunked_prefill and max_num_tokens and prompt_len > max_num_tokens:
            raise ValueError(
                f"The sum of prompt length ({prompt_len}), query length (0) should not exceed "
                f"max_num_tokens ({max_num_tokens})"
            )


class _TrtLLM(BaseLLM):
    """The TensorRT-engine backend; the stand-in loads prebuilt engine dirs only (it cannot build)."""

    _args_class = TrtLlmArgs

    def _build_model(self) -> None:
        args = self.args
        if args.guided_decoding_backend not in (None, "xgrammar"):
            raise ValueError(f"Unsupported guided decoding backend {args.guided_decoding_backend}")
        engine_dir = Path(args.model)
        config = json.loads((engine_dir / "config.json").read_text())
        if "build_config" not in config or not any(engine_dir.glob("rank*.engine")):
            raise NotImplementedError(f"the stand-in cannot build a TensorRT engine from {engine_dir}")
        built = BuildConfig(**config["build_config"])
        args.build_config = built
        for key in ("max_batch_size", "max_num_tokens"):
            runtime, baked = getattr(args, key), getattr(built, key)
            if runtime is not None and runtime > baked:
                logger.warning("%s [%s] is overridden by build_config.%s [%s]", key, runtime, key, baked)
                setattr(args, key, baked)
        args.max_batch_size = args.max_batch_size or built.max_batch_size
        args.max_num_tokens = args.max_num_tokens or built.max_num_tokens
        args.max_seq_len = built.max_seq_len
        args.max_input_len = built.max_input_len
        self._start(engine_dir, int(config["pretrained_config"]["vocab_size"]), args.max_batch_size)

    def _check_arguments(self, prompt_len: int, params: SamplingParams) -> None:
        max_seq_len = self.args.build_config.max_seq_len
        if not self.args.enable_chunked_prefill and prompt_len + (params.max_tokens or 0) > max_seq_len:
            raise ValueError(
                f"The sum of prompt length ({prompt_len}) and query length (0) max_tokens ({params.max_tokens}) "
                f"should not exceed max_seq_len ({max_seq_len})"
            )


class LLM(_TorchLLM):
    """The main entry point: the PyTorch backend."""
