"""The TRT adapter against TensorRT-LLM's recorded 1.2.x API surface (tests/data/trtllm_api.json).

Two checks, since TensorRT-LLM itself cannot run here: every keyword and attribute the adapter uses
exists in the recorded surface (recorded by spying on the stand-in's public classes while the
adapter runs a representative workload), and the stand-in offers exactly the recorded surface, so
that passing the other tests against it means something.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from trt_support import REPO_ROOT, STAND_INS, forget_trt, make_engine_dir, trt_settings

from yap_engines import ChatRequest, Sampling, StructuredOutput
from yap_engines.chat import render_ids

SURFACE: dict[str, Any] = json.loads((REPO_ROOT / "tests" / "data" / "trtllm_api.json").read_text())
LLM_SURFACE = SURFACE["LLM"]
RESULT_MEMBERS = {m.split("(")[0] for m in SURFACE["GenerationResult"] + SURFACE["RequestOutput"]}


class Recorder:
    """What the adapter did to the API: constructor/method keywords, and attributes read from results."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.result_reads: set[str] = set()
        self.output_reads: set[str] = set()

    def wrap(self, name: str, target: Callable[..., Any]) -> Callable[..., Any]:
        def recording(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return target(*args, **kwargs)

        return recording

    def keywords(self, name: str) -> set[str]:
        return {key for call, _, kwargs in self.calls if call == name for key in kwargs}


class _Watched:
    """A proxy that records which attributes are read (on a result, and on its outputs)."""

    def __init__(self, target: Any, reads: set[str], output_reads: set[str] | None = None) -> None:
        self._target, self._reads, self._output_reads = target, reads, output_reads

    def __getattr__(self, name: str) -> Any:
        self._reads.add(name)
        value = getattr(self._target, name)
        if name == "outputs" and self._output_reads is not None:
            return [_Watched(output, self._output_reads) for output in value]
        return value

    def __aiter__(self) -> _Watched:
        self._reads.add("__aiter__")
        return self

    async def __anext__(self) -> _Watched:
        await self._target.__anext__()
        return self


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, Recorder]]:
    """The adapter, imported against a stand-in whose public classes and `generate_async` are recorded."""
    forget_trt()
    monkeypatch.syspath_prepend(str(STAND_INS))
    recorder = Recorder()
    public = [
        importlib.import_module(m) for m in ("tensorrt_llm", "tensorrt_llm.llmapi", "tensorrt_llm._tensorrt_engine")
    ]
    engine_llm = public[2].LLM
    for module in public:
        for name, value in list(vars(module).items()):
            wanted = name in ("LLM", "SamplingParams", *SURFACE["llmapi_exports"])
            if wanted and inspect.isclass(value) and not issubclass(value, BaseException):
                label = "_tensorrt_engine.LLM" if value is engine_llm else name
                monkeypatch.setattr(module, name, recorder.wrap(label, value))
    from tensorrt_llm.llmapi.llm import BaseLLM

    original_generate_async = BaseLLM.generate_async

    def generate_async(llm: Any, *args: Any, **kwargs: Any) -> Any:
        recorder.calls.append(("generate_async", args, kwargs))
        result = original_generate_async(llm, *args, **kwargs)
        return _Watched(result, recorder.result_reads, recorder.output_reads)

    monkeypatch.setattr(BaseLLM, "generate_async", generate_async)
    try:
        yield importlib.import_module("yap_engines.adapters.trt"), recorder
    finally:
        forget_trt()


def _requests(prompt: list[int]) -> list[ChatRequest]:
    plain = Sampling(seed=1, max_tokens=4, logit_bias={2: -100.0})

    def with_output(structured: StructuredOutput) -> ChatRequest:
        return ChatRequest(uuid.uuid4().hex, prompt, Sampling(seed=1, max_tokens=12), structured)

    return [
        ChatRequest(uuid.uuid4().hex, prompt, plain),
        ChatRequest(uuid.uuid4().hex, prompt, Sampling(max_tokens=4, stop=("zz",), min_p=0.1, top_k=5)),
        with_output(StructuredOutput.json_schema({"type": "object", "properties": {"a": {"type": "boolean"}}})),
        with_output(StructuredOutput.json_object()),
        with_output(StructuredOutput.regex("(yes|no)")),
        with_output(StructuredOutput.choice(["yes", "no"])),
        with_output(StructuredOutput.grammar('root ::= "yes" | "no"')),
    ]


async def test_every_keyword_and_attribute_the_adapter_uses_is_in_the_recorded_api(
    recorded: tuple[ModuleType, Recorder], demo_model_dir: Path, demo_tokenizer: Any, tmp_path: Path
) -> None:
    trt, recorder = recorded
    prompt = render_ids(demo_tokenizer, [{"role": "user", "content": "Hello?"}])
    engine_dir = make_engine_dir(tmp_path / "engine", demo_model_dir)
    for settings in (trt_settings(demo_model_dir, kv_dtype="fp8"), trt_settings(engine_dir, chat_max_len=4000)):
        engine = trt.TrtEngine.from_settings(settings)
        try:
            for request in _requests(prompt):
                stream = engine.generate(request)
                [_ async for _ in stream]
            stream = engine.generate(ChatRequest("cancel-me", prompt, Sampling(max_tokens=100)))
            await anext(stream)
            await engine.abort("cancel-me")
            await stream.aclose()
        finally:
            await engine.aclose()
    on_the_fly = trt_settings(demo_model_dir, trt_legacy_engine=True)
    trt.llm_kwargs(on_the_fly, trt.TrtLimits.resolve(on_the_fly), engine_backend=True, prebuilt=False)

    called = {name for name, _, _ in recorder.calls}
    assert called >= {"LLM", "_tensorrt_engine.LLM", "SamplingParams", "GuidedDecodingParams", "KvCacheConfig"}
    assert called >= {"BuildConfig", "generate_async"}
    init_params = set(LLM_SURFACE["init_params"])
    assert recorder.keywords("LLM") <= init_params | set(LLM_SURFACE["args_fields_pytorch"])
    assert recorder.keywords("_tensorrt_engine.LLM") <= init_params | set(LLM_SURFACE["args_fields_trt_engine"])
    for name in ("SamplingParams", "GuidedDecodingParams", "KvCacheConfig", "BuildConfig"):
        assert recorder.keywords(name) <= set(SURFACE[name]), name
    params = LLM_SURFACE["generate_async_params"]
    for name, args, kwargs in recorder.calls:
        if name == "generate_async":
            assert len(args) <= 2 and set(kwargs) <= set(params[len(args) :])
        else:
            assert not args, f"{name} takes keyword arguments only"
    assert recorder.result_reads and recorder.result_reads - {"__aiter__"} <= RESULT_MEMBERS
    assert recorder.output_reads and recorder.output_reads <= set(SURFACE["CompletionOutput"])
    assert set(trt._FINISH) - {None} <= set(SURFACE["finish_reasons"])


def _signature_params(function: Callable[..., Any]) -> list[str]:
    return [
        p.name for p in inspect.signature(function).parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD
    ]


def test_the_stand_in_offers_exactly_the_recorded_llm_api(trt: ModuleType) -> None:
    import tensorrt_llm
    from tensorrt_llm._tensorrt_engine import LLM as EngineLLM
    from tensorrt_llm.llmapi import TorchLlmArgs, TrtLlmArgs

    for llm_class in (tensorrt_llm.LLM, EngineLLM):
        assert _signature_params(llm_class.__init__) == LLM_SURFACE["init_params"]
        assert _signature_params(llm_class.generate_async) == LLM_SURFACE["generate_async_params"]
    assert set(TorchLlmArgs.model_fields) == set(LLM_SURFACE["args_fields_pytorch"])
    assert set(TrtLlmArgs.model_fields) == set(LLM_SURFACE["args_fields_trt_engine"])


def test_the_stand_in_offers_exactly_the_recorded_parameter_classes(trt: ModuleType) -> None:
    import tensorrt_llm.llmapi as llmapi

    for cls in (llmapi.SamplingParams, llmapi.GuidedDecodingParams):
        init_fields = {f.name: f.default for f in dataclasses.fields(cls) if f.init}
        assert {name: repr(default) for name, default in init_fields.items()} == SURFACE[cls.__name__]
        with pytest.raises(TypeError):
            cls(**{"not_a_field": 1})
    kv_fields = {name: repr(f.default) for name, f in llmapi.KvCacheConfig.model_fields.items()}
    assert kv_fields == SURFACE["KvCacheConfig"]
    assert set(llmapi.BuildConfig.model_fields) <= set(SURFACE["BuildConfig"])


def test_the_stand_in_results_have_only_recorded_members(trt: ModuleType) -> None:
    from tensorrt_llm.llmapi import CompletionOutput, RequestOutput

    output_fields = {f.name for f in dataclasses.fields(CompletionOutput) if f.init}
    output_properties = {n for n, v in vars(CompletionOutput).items() if isinstance(v, property)}
    assert output_fields | output_properties == set(SURFACE["CompletionOutput"])
    result_members = {n for n in dir(RequestOutput) if not n.startswith("_")}
    result_members |= {"cached_tokens", "decoding_iter", "sampling_params", "tokenizer"}  # set in __init__
    assert result_members <= RESULT_MEMBERS
    assert {"outputs", "finished", "abort", "aborted", "cached_tokens", "request_id"} <= result_members


def test_the_stand_in_exports_nothing_the_real_package_lacks(trt: ModuleType) -> None:
    import tensorrt_llm.llmapi as llmapi

    assert set(llmapi.__all__) <= set(SURFACE["llmapi_exports"])
    assert SURFACE["pinned"] == "tensorrt-llm 1.2.x"
