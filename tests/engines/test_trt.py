"""`TrtEngine` behaviour over the CPU stand-in for `tensorrt_llm`: translation, streaming, limits, backends.

TensorRT-LLM itself needs an NVIDIA GPU; tests/stand_ins mirrors the API the adapter uses (see
test_trt_api_surface.py for the check against the recorded 1.2.x surface).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from trt_support import REPO_ROOT, forget_trt, make_engine_dir, trt_settings

from yap_engines import (
    BackendUnavailableError,
    ChatRequest,
    ContextTooLongError,
    Delta,
    EngineDeadError,
    EngineError,
    GenerationError,
    InvalidRequestError,
    InvalidSamplingError,
    Sampling,
    SettingsError,
    StructuredOutput,
    load_engine,
)
from yap_engines.chat import render_ids
from yap_engines.settings import EngineSettings

EOS = 2  # the demo tokenizer's end token


@pytest.fixture
def prompt_ids(demo_tokenizer: Any) -> list[int]:
    return render_ids(
        demo_tokenizer,
        [
            {"role": "system", "content": "You are a brief voice assistant."},
            {"role": "user", "content": f"What is on my screen ({uuid.uuid4().hex[:6]})?"},
        ],
    )


def request_for(ids: list[int], *, structured: StructuredOutput | None = None, **sampling: Any) -> ChatRequest:
    """A request with EOS banned (so lengths are under the test's control) unless `logit_bias` is given."""
    values = {"seed": 7, "max_tokens": 24, "logit_bias": {EOS: -100.0}, **sampling}
    return ChatRequest(f"t-{uuid.uuid4().hex}", ids, Sampling(**values), structured_output=structured)


async def collect(engine: Any, request: ChatRequest) -> list[Delta]:
    return [delta async for delta in engine.generate(request)]


def joined(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


@pytest.fixture
def abort_calls(trt: ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Request ids on which the stand-in's `RequestOutput.abort()` is called, in order."""
    import tensorrt_llm.executor as results

    calls: list[int] = []
    original = results.RequestOutput.abort

    def counting_abort(self: Any) -> None:
        calls.append(self.request_id)
        original(self)

    monkeypatch.setattr(results.RequestOutput, "abort", counting_abort)
    return calls


# -- streaming, cancellation, usage --------------------------------------------------------------


async def test_cancelling_the_consumer_calls_abort_once_and_frees_the_slot(
    trt_engine: Any, prompt_ids: list[int], abort_calls: list[int]
) -> None:
    request = request_for(prompt_ids, max_tokens=150)
    got_three = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(trt_engine.generate(request)) as stream:
            async for count, _ in aenumerate(stream):
                if count == 3:
                    got_three.set()
                await asyncio.sleep(0.01)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_three.wait(), 30)
    executor = trt_engine.llm._executor
    assert len(executor.running_request_ids()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(abort_calls) == 1
    await asyncio.sleep(0.05)  # the executor drops an aborted request at its next step
    assert executor.running_request_ids() == []
    assert trt_engine.num_unfinished_requests() == 0


async def aenumerate(stream: Any) -> Any:
    count = 0
    async for item in stream:
        count += 1
        yield count, item


async def test_abort_from_outside_then_closing_still_aborts_only_once(
    trt_engine: Any, prompt_ids: list[int], abort_calls: list[int]
) -> None:
    request = request_for(prompt_ids, max_tokens=150)
    stream = trt_engine.generate(request)
    first = await anext(stream)
    await trt_engine.abort(request.request_id)
    await trt_engine.abort(request.request_id)
    rest = [delta async for delta in stream]
    assert len(abort_calls) == 1
    assert rest[-1].finish_reason == "cancelled"
    streamed = sum(len(d.token_ids) for d in [first, *rest])
    assert rest[-1].usage is not None and rest[-1].usage.completion_tokens == streamed < 150


async def test_deltas_are_the_backends_text_diffs_and_token_diffs(
    trt_engine: Any, prompt_ids: list[int], demo_tokenizer: Any
) -> None:
    deltas = await collect(trt_engine, request_for(prompt_ids, max_tokens=30))
    token_ids = [t for d in deltas for t in d.token_ids]
    assert len(token_ids) == 30 and deltas[-1].finish_reason == "length"
    assert sum(1 for d in deltas if d.token_ids) >= 29  # one step, one delta
    assert joined(deltas) == demo_tokenizer.decode(token_ids, skip_special_tokens=True)


async def test_a_stop_string_spanning_two_tokens_never_leaks_its_start(trt_engine: Any, prompt_ids: list[int]) -> None:
    pieces = [d.text for d in await collect(trt_engine, request_for(prompt_ids)) if d.text]
    full = "".join(pieces)
    stop, cut = None, -1
    for k in range(len(pieces) - 1):
        boundary = len("".join(pieces[: k + 1]))
        candidate = pieces[k][-1] + pieces[k + 1][0]
        if full.find(candidate) == boundary - 1:
            stop, cut = candidate, boundary - 1
            break
    assert stop is not None, f"no stop string across a token boundary in {pieces!r}"
    deltas = await collect(trt_engine, request_for(prompt_ids, stop=[stop]))
    assert deltas[-1].finish_reason == "stop"
    assert joined(deltas) == full[:cut]


async def test_usage_reports_block_reuse_as_cached_tokens(trt_engine: Any, demo_tokenizer: Any) -> None:
    persona = "You are a helpful voice assistant. " * 30 + uuid.uuid4().hex
    first = render_ids(demo_tokenizer, [{"role": "system", "content": persona}, {"role": "user", "content": "One?"}])
    second = render_ids(demo_tokenizer, [{"role": "system", "content": persona}, {"role": "user", "content": "Two!"}])
    cold = (await collect(trt_engine, request_for(first, max_tokens=3)))[-1].usage
    warm_deltas = await collect(trt_engine, request_for(second, max_tokens=3))
    warm = warm_deltas[-1].usage
    assert cold is not None and warm is not None
    assert (cold.prompt_tokens, cold.cached_tokens) == (len(first), 0)
    assert warm.prompt_tokens == len(second)
    assert warm.completion_tokens == sum(len(d.token_ids) for d in warm_deltas) == 3
    tokens_per_block = trt_engine.llm.args.kv_cache_config.tokens_per_block
    assert 0 < warm.cached_tokens < len(second) and warm.cached_tokens % tokens_per_block == 0


async def test_requests_without_a_seed_get_fresh_seeds_reproducible_per_engine_seed(
    trt: ModuleType, demo_model_dir: Path, prompt_ids: list[int]
) -> None:
    async def two_replies(engine_seed: int) -> list[str]:
        engine = trt.TrtEngine.from_settings(trt_settings(demo_model_dir, seed=engine_seed))
        try:
            return [joined(await collect(engine, request_for(prompt_ids, seed=None))) for _ in range(2)]
        finally:
            await engine.aclose()

    replies = await two_replies(5)
    assert replies[0] != replies[1]  # TensorRT-LLM alone would use seed 0 for both
    assert await two_replies(5) == replies


# -- sampling translation ------------------------------------------------------------------------


def test_sampling_is_always_explicit(trt: ModuleType) -> None:
    request = ChatRequest("r", [1, 2, 3], Sampling())
    params = trt.sampling_params(request, vocab_size=384, seed=42)
    defaults = Sampling()
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k) == (
        defaults.max_tokens,
        defaults.temperature,
        defaults.top_p,
        0,
    )
    assert params.seed == 42
    assert not type(params).params_imply_greedy_decoding(
        temperature=params.temperature, top_p=params.top_p, top_k=params.top_k
    )


def test_every_sampling_knob_is_passed_on(trt: ModuleType) -> None:
    sampling = Sampling(
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        repetition_penalty=1.2,
        presence_penalty=0.5,
        frequency_penalty=-0.3,
        max_tokens=77,
        stop=("User:", "\n\n"),
        seed=9,
    )
    params = trt.sampling_params(ChatRequest("r", [1], sampling), vocab_size=384, seed=0)
    assert (params.temperature, params.top_p, params.top_k, params.min_p) == (0.7, 0.9, 40, 0.05)
    assert (params.repetition_penalty, params.presence_penalty, params.frequency_penalty) == (1.2, 0.5, -0.3)
    assert (params.max_tokens, params.seed, params.stop) == (77, 9, ["User:", "\n\n"])


def test_logit_bias_becomes_an_embedding_bias_over_the_vocabulary(trt: ModuleType) -> None:
    import torch

    request = ChatRequest("r", [1], Sampling(logit_bias={5: -100, 7: 2.5, 383: 1}))
    bias = trt.sampling_params(request, vocab_size=384, seed=0).embedding_bias
    assert bias.dtype == torch.float32 and tuple(bias.shape) == (384,)
    assert (bias[5].item(), bias[7].item(), bias[383].item()) == (-100.0, 2.5, 1.0)
    assert torch.count_nonzero(bias).item() == 3


def test_logit_bias_outside_the_vocabulary_is_refused(trt: ModuleType) -> None:
    request = ChatRequest("r", [1], Sampling(logit_bias={384: 1.0}))
    with pytest.raises(InvalidSamplingError, match="outside the vocabulary") as caught:
        trt.sampling_params(request, vocab_size=384, seed=0)
    assert caught.value.key == "logit_bias"


async def test_banned_and_forced_tokens_act_on_the_output(
    trt_engine: Any, prompt_ids: list[int], demo_tokenizer: Any
) -> None:
    async def tokens(**sampling: Any) -> list[int]:
        return [t for d in await collect(trt_engine, request_for(prompt_ids, **sampling)) for t in d.token_ids]

    free = await tokens(max_tokens=40)
    common = max(set(free), key=free.count)
    banned = await tokens(max_tokens=40, logit_bias={EOS: -100.0, common: -100.0})
    assert common in free and common not in banned
    assert await tokens(max_tokens=5, logit_bias={common: 100.0}) == [common] * 5


def test_choice_compiles_to_an_anchored_escaped_regex(trt: ModuleType) -> None:
    options = ["a.b", "c|d", "x (y)?", "line\nbreak", "[1]+{2}*^$\\"]
    regex = trt.choice_regex(options)
    assert regex == "^(?:a\\.b|c\\|d|x \\(y\\)\\?|line\\nbreak|\\[1\\]\\+\\{2\\}\\*\\^\\$\\\\)$"
    for option in options:
        assert re.fullmatch(regex, option)
    for near_miss in ("aXb", "a.bc|d", "c", "x (y)", ""):
        assert not re.fullmatch(regex, near_miss)


async def test_choice_output_is_exactly_one_option_even_with_regex_characters(
    trt_engine: Any, prompt_ids: list[int]
) -> None:
    options = ["look (closer)?", "a.b|c", "1+1"]
    for seed in range(4):
        request = request_for(prompt_ids, seed=seed, max_tokens=30, logit_bias=None)
        request = ChatRequest(request.request_id, prompt_ids, request.sampling, StructuredOutput.choice(options))
        deltas = await collect(trt_engine, request)
        assert joined(deltas) in options and deltas[-1].finish_reason == "stop"


@pytest.mark.parametrize(
    ("structured", "field", "expected"),
    [
        (StructuredOutput.json_schema({"type": "object"}), "json", {"type": "object"}),
        (StructuredOutput.json_object(), "json_object", True),
        (StructuredOutput.regex("[a-z]+"), "regex", "[a-z]+"),
        (StructuredOutput.grammar('root ::= "yes" | "no"'), "grammar", 'root ::= "yes" | "no"'),
        (StructuredOutput.choice(["yes", "no"]), "regex", "^(?:yes|no)$"),
    ],
)
def test_structured_outputs_become_guided_decoding(
    trt: ModuleType, structured: StructuredOutput, field: str, expected: Any
) -> None:
    guide = trt.sampling_params(ChatRequest("r", [1], Sampling(), structured), vocab_size=384, seed=0).guided_decoding
    assert getattr(guide, field) == expected
    others = {"json", "regex", "grammar", "json_object", "structural_tag"} - {field}
    assert not any(getattr(guide, name) for name in others)


async def test_a_grammar_constrains_the_output(trt_engine: Any, prompt_ids: list[int]) -> None:
    grammar = 'root ::= "turn " ("left" | "right") " now"'
    request = ChatRequest("g", prompt_ids, Sampling(seed=3, max_tokens=20), StructuredOutput.grammar(grammar))
    assert joined(await collect(trt_engine, request)) in ("turn left now", "turn right now")


async def test_guided_decoding_is_enabled_at_construction_because_the_backend_needs_it(
    trt: ModuleType, trt_engine: Any, demo_model_dir: Path, prompt_ids: list[int]
) -> None:
    import tensorrt_llm
    from tensorrt_llm.llmapi import GuidedDecodingParams

    assert trt_engine.llm.args.guided_decoding_backend == "xgrammar"
    bare = tensorrt_llm.LLM(model=str(demo_model_dir))
    params = tensorrt_llm.SamplingParams(max_tokens=4, guided_decoding=GuidedDecodingParams(regex="yes|no"))
    with pytest.raises(ValueError, match="guided decoding is not enabled"):
        bare.generate_async(prompt_ids, params, streaming=True)
    bare.shutdown()


# -- construction: kwargs, limits, backends --------------------------------------------------------


def test_llm_arguments_derive_from_the_chat_settings(trt: ModuleType, demo_model_dir: Path) -> None:
    settings = trt_settings(demo_model_dir, chat_max_len=1000, chat_max_out=100, chat_gpu_frac=0.5, kv_dtype="fp8")
    args = trt.TrtEngine.from_settings(settings).llm.args
    assert (args.max_input_len, args.max_seq_len, args.max_batch_size, args.max_num_tokens) == (1000, 1100, 64, 8192)
    kv = args.kv_cache_config
    assert (kv.enable_block_reuse, kv.free_gpu_memory_fraction, kv.dtype) == (True, 0.5, "fp8")
    assert args.guided_decoding_backend == "xgrammar"


def test_trt_variables_override_and_are_applied(
    trt: ModuleType, demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "MODEL": str(demo_model_dir),
        "TRT_KV_FREE_GPU_FRAC": "0.3",
        "TRT_MAX_INPUT_LEN": "2000",
        "TRT_MAX_OUTPUT_LEN": "200",
        "TRT_MAX_NUM_TOKENS": "4096",
        "TRT_MAX_BATCH_SIZE": "16",
        "TRT_BATCH_SIZE": "8",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    engine = trt.TrtEngine.from_settings(EngineSettings.from_env(engine="trt"))
    args = engine.llm.args
    assert (args.max_input_len, args.max_seq_len, args.max_num_tokens, args.max_batch_size) == (2000, 2200, 4096, 8)
    assert args.kv_cache_config.free_gpu_memory_fraction == 0.3
    assert (engine.limits.max_batch_size, engine.limits.batch_size) == (16, 8)


@pytest.mark.parametrize(("batch_size", "expected_peak"), [(2, 2), (None, 5)])
async def test_the_batch_size_is_what_the_backend_runs_at_once(
    trt: ModuleType, demo_model_dir: Path, prompt_ids: list[int], batch_size: int | None, expected_peak: int
) -> None:
    engine = trt.TrtEngine.from_settings(trt_settings(demo_model_dir, trt_batch_size=batch_size))
    try:
        results = await asyncio.gather(*(collect(engine, request_for(prompt_ids, max_tokens=8)) for _ in range(5)))
        assert all(r[-1].finish_reason == "length" for r in results)
        assert engine.llm._executor.peak_running == expected_peak
    finally:
        await engine.aclose()


def test_a_batch_size_over_the_max_is_refused_at_startup(trt: ModuleType, demo_model_dir: Path) -> None:
    with pytest.raises(SettingsError, match=r"TRT_BATCH_SIZE=32 is over the max batch size 16 \(TRT_MAX_BATCH_SIZE\)"):
        trt.TrtEngine.from_settings(trt_settings(demo_model_dir, trt_max_batch_size=16, trt_batch_size=32))


def test_a_batch_size_over_an_engines_baked_in_max_is_refused_at_startup(
    trt: ModuleType, demo_model_dir: Path, tmp_path: Path
) -> None:
    engine_dir = make_engine_dir(tmp_path / "engine", demo_model_dir, max_batch_size=4)
    with pytest.raises(SettingsError) as caught:
        trt.TrtEngine.from_settings(trt_settings(engine_dir, trt_batch_size=8, chat_max_len=4000))
    message = str(caught.value)
    assert "TRT_BATCH_SIZE=8 is over the max batch size 4 baked into the engine at" in message
    assert str(engine_dir) in message and "rebuild the engine" in message
    # Left to TensorRT-LLM, the request would be cut down to the baked-in size with only a log line.
    from tensorrt_llm._tensorrt_engine import LLM as EngineLLM

    assert EngineLLM(model=str(engine_dir), max_batch_size=8).args.max_batch_size == 4


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"chat_max_len": 7000}, "TRT_MAX_INPUT_LEN"),
        ({"chat_max_len": 6000, "chat_max_out": 500}, "TRT_MAX_INPUT_LEN + TRT_MAX_OUTPUT_LEN"),
        ({"chat_max_len": 4000, "trt_max_num_tokens": 9000}, "TRT_MAX_NUM_TOKENS"),
    ],
)
def test_limits_over_an_engines_baked_in_sizes_are_refused(
    trt: ModuleType, demo_model_dir: Path, tmp_path: Path, fields: dict[str, int], named: str
) -> None:
    engine_dir = make_engine_dir(tmp_path / "engine", demo_model_dir)
    with pytest.raises(SettingsError, match=re.escape(named)):
        trt.TrtEngine.from_settings(trt_settings(engine_dir, **fields))


def test_max_num_tokens_below_the_prompt_budget_is_refused(trt: ModuleType, demo_model_dir: Path) -> None:
    with pytest.raises(SettingsError, match="TRT_MAX_NUM_TOKENS=2048 is below TRT_MAX_INPUT_LEN=5025"):
        trt.TrtEngine.from_settings(trt_settings(demo_model_dir, trt_max_num_tokens=2048))


def test_a_kv_dtype_tensorrt_llm_lacks_is_refused(trt: ModuleType, demo_model_dir: Path) -> None:
    with pytest.raises(SettingsError, match="KV_DTYPE=fp8_e5m2"):
        trt.TrtEngine.from_settings(trt_settings(demo_model_dir, kv_dtype="fp8_e5m2"))


def test_engine_dirs_are_recognised(trt: ModuleType, demo_model_dir: Path, tmp_path: Path) -> None:
    engine_dir = make_engine_dir(tmp_path / "engine", demo_model_dir)
    assert trt.is_engine_dir(engine_dir)
    assert not trt.is_engine_dir(demo_model_dir)  # an HF checkpoint
    assert not trt.is_engine_dir(tmp_path / "missing")
    no_engine_file = make_engine_dir(tmp_path / "no-rank-file", demo_model_dir)
    (no_engine_file / "rank0.engine").unlink()
    assert not trt.is_engine_dir(no_engine_file)
    checkpoint = make_engine_dir(tmp_path / "trt-checkpoint", demo_model_dir)
    (checkpoint / "config.json").write_text('{"architecture": "LlamaForCausalLM"}')
    assert not trt.is_engine_dir(checkpoint)


async def test_an_engine_dir_runs_on_the_tensorrt_engine_backend(
    trt: ModuleType, demo_model_dir: Path, tmp_path: Path, prompt_ids: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    import tensorrt_llm
    from tensorrt_llm._tensorrt_engine import LLM as EngineLLM

    engine_dir = make_engine_dir(tmp_path / "engine", demo_model_dir, max_batch_size=8)
    with caplog.at_level(logging.WARNING, logger="tensorrt_llm"):
        engine = trt.TrtEngine.from_settings(trt_settings(engine_dir, trt_batch_size=4))
    try:
        assert type(engine.llm) is EngineLLM and not isinstance(engine.llm, tensorrt_llm.LLM)
        assert (engine.llm.args.max_batch_size, engine.vocab_size) == (4, 384)
        assert "overridden" not in caplog.text
        deltas = await collect(engine, request_for(prompt_ids, max_tokens=6))
        assert deltas[-1].finish_reason == "length" and len([t for d in deltas for t in d.token_ids]) == 6
    finally:
        await engine.aclose()


def test_a_checkpoint_runs_on_the_pytorch_backend(trt: ModuleType, demo_model_dir: Path) -> None:
    import tensorrt_llm

    assert type(trt.TrtEngine.from_settings(trt_settings(demo_model_dir)).llm) is tensorrt_llm.LLM


def test_pytorch_backend_forced_on_an_engine_dir_is_refused(
    trt: ModuleType, demo_model_dir: Path, tmp_path: Path
) -> None:
    engine_dir = make_engine_dir(tmp_path / "engine", demo_model_dir)
    with pytest.raises(SettingsError, match="TRT_LEGACY_ENGINE=false"):
        trt.TrtEngine.from_settings(trt_settings(engine_dir, trt_legacy_engine=False))


def test_an_engine_built_on_the_fly_is_sized_for_the_max_and_run_at_the_batch_size(
    trt: ModuleType, demo_model_dir: Path
) -> None:
    settings = trt_settings(demo_model_dir, trt_legacy_engine=True, trt_max_batch_size=32, trt_batch_size=8)
    limits = trt.TrtLimits.resolve(settings)
    kwargs = trt.llm_kwargs(settings, limits, engine_backend=True, prebuilt=False)
    build = kwargs["build_config"]
    assert (build.max_batch_size, build.max_input_len, build.max_seq_len) == (32, 5025, 5175)
    assert kwargs["max_batch_size"] == 8


def test_the_stand_in_refuses_keywords_the_real_api_lacks(
    trt: ModuleType, demo_model_dir: Path, tmp_path: Path
) -> None:
    import tensorrt_llm
    from tensorrt_llm._tensorrt_engine import LLM as EngineLLM
    from tensorrt_llm.llmapi import GuidedDecodingParams, KvCacheConfig

    with pytest.raises(ValueError, match="LLM got invalid argument: max_concurrency"):
        tensorrt_llm.LLM(model=str(demo_model_dir), max_concurrency=4)
    with pytest.raises(ValueError, match="specific to TensorRT backend"):
        tensorrt_llm.LLM(model=str(demo_model_dir), quant_config=None)
    with pytest.raises(ValueError, match="got invalid argument: cuda_graph_config"):
        EngineLLM(model=str(make_engine_dir(tmp_path / "e", demo_model_dir)), cuda_graph_config=None)
    with pytest.raises(TypeError):
        tensorrt_llm.SamplingParams(logit_bias={1: 2.0})
    with pytest.raises(TypeError):
        GuidedDecodingParams(choice=["yes", "no"])
    with pytest.raises(ValueError, match="extra"):
        KvCacheConfig(free_gpu_memory_fraction=0.5, gpu_memory_utilization=0.9)


# -- requests, errors, lifecycle ------------------------------------------------------------------


async def test_a_prompt_over_the_input_limit_is_refused(
    trt: ModuleType, demo_model_dir: Path, prompt_ids: list[int]
) -> None:
    engine = trt.TrtEngine.from_settings(trt_settings(demo_model_dir, trt_max_input_len=len(prompt_ids) - 1))
    try:
        with pytest.raises(ContextTooLongError, match="TRT_MAX_INPUT_LEN"):
            await collect(engine, request_for(prompt_ids))
    finally:
        await engine.aclose()


async def test_a_reply_that_would_overrun_the_context_ends_with_length(
    trt: ModuleType, demo_model_dir: Path, prompt_ids: list[int]
) -> None:
    settings = trt_settings(demo_model_dir, trt_max_input_len=len(prompt_ids) + 2, trt_max_output_len=8)
    engine = trt.TrtEngine.from_settings(settings)
    try:
        deltas = await collect(engine, request_for(prompt_ids, max_tokens=50))
        assert deltas[-1].finish_reason == "length"
        assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 10
    finally:
        await engine.aclose()


async def test_a_failed_request_is_a_generation_error_and_the_engine_stays_up(
    trt_engine: Any, prompt_ids: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensorrt_llm._runtime import Model

    def broken(self: Any, request: Any) -> int:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with monkeypatch.context() as patch:
        patch.setattr(Model, "next_token", broken)
        with pytest.raises(GenerationError, match="illegal memory access"):
            await collect(trt_engine, request_for(prompt_ids))
    assert (await trt_engine.health()).ok
    assert (await collect(trt_engine, request_for(prompt_ids, max_tokens=3)))[-1].finish_reason == "length"


async def test_a_grammar_that_does_not_compile_fails_only_that_request(trt_engine: Any, prompt_ids: list[int]) -> None:
    request = ChatRequest("r", prompt_ids, Sampling(max_tokens=3), StructuredOutput.regex("(unclosed"))
    with pytest.raises(GenerationError, match="grammar"):
        await collect(trt_engine, request)
    assert (await trt_engine.health()).ok


async def test_an_argument_the_backend_rejects_is_an_invalid_request(
    trt_engine: Any, prompt_ids: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("The sum of prompt length (9000), query length (0) should not exceed max_num_tokens (8192)")

    monkeypatch.setattr(trt_engine.llm, "generate_async", refuse)
    with pytest.raises(InvalidRequestError, match="max_num_tokens"):
        await collect(trt_engine, request_for(prompt_ids))
    assert (await trt_engine.health()).ok


async def test_a_request_id_cannot_run_twice(trt_engine: Any, prompt_ids: list[int]) -> None:
    request = request_for(prompt_ids, max_tokens=100)
    stream = trt_engine.generate(request)
    await anext(stream)
    with pytest.raises(InvalidRequestError, match="already running"):
        await anext(trt_engine.generate(request))
    await stream.aclose()


async def test_aclose_aborts_running_requests_and_shuts_the_llm_down(
    trt: ModuleType, demo_model_dir: Path, prompt_ids: list[int], abort_calls: list[int]
) -> None:
    engine = trt.TrtEngine.from_settings(trt_settings(demo_model_dir))
    assert (await engine.health()).detail.startswith("tensorrt_llm 1.2.1")
    stream = engine.generate(request_for(prompt_ids, max_tokens=150))
    await anext(stream)
    llm = engine.llm
    await engine.aclose()
    await engine.aclose()
    assert len(abort_calls) == 1
    with pytest.raises(RuntimeError, match="LLM is shutting down"):
        llm.generate_async(prompt_ids)
    with contextlib.suppress(EngineDeadError):
        assert [d async for d in stream][-1].finish_reason == "cancelled"
    assert not (await engine.health()).ok
    with pytest.raises(EngineDeadError, match="closed"):
        await collect(engine, request_for(prompt_ids))


def test_a_missing_tokenizer_fails_at_startup(trt: ModuleType, demo_model_dir: Path, tmp_path: Path) -> None:
    engine_dir = make_engine_dir(tmp_path / "engine", demo_model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (engine_dir / name).unlink()
    with pytest.raises(EngineError, match="could not start"):
        trt.TrtEngine.from_settings(trt_settings(engine_dir, chat_max_len=4000))


# -- without TensorRT-LLM --------------------------------------------------------------------------


def test_without_tensorrt_llm_the_engine_says_how_to_install_it(demo_model_dir: Path) -> None:
    forget_trt()
    assert not any(Path(p).name == "stand_ins" for p in sys.path)
    with pytest.raises(BackendUnavailableError) as caught:
        load_engine("trt", model=str(demo_model_dir))
    message = str(caught.value)
    assert "pypi.nvidia.com" in message and "docker/trt/Dockerfile" in message
    assert isinstance(caught.value, ImportError)
    assert "tensorrt_llm" not in sys.modules


def test_yap_serve_without_tensorrt_llm_exits_with_the_hint_and_no_traceback() -> None:
    env = {**os.environ, "TEXT_API_KEY": "k", "MAX_CONCURRENT_CONNECTIONS": "2"}
    out = subprocess.run(
        [sys.executable, "-m", "yap_cli", "serve", "--engine", "trt"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert out.returncode != 0
    assert "pypi.nvidia.com" in out.stderr
    assert "Traceback" not in out.stderr
