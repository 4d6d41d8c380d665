"""`YAP_DTYPE=auto` follows the processor: bfloat16 on a GPU or a CPU with native bf16, float32 elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from yap_engines.dtype import NATIVE_BF16_FLAGS, choose_dtype, cpu_flags
from yap_engines.settings import EngineSettings

AVX2_LAPTOP = {"fpu", "sse4_2", "avx", "avx2", "fma"}
AVX512_NO_BF16 = AVX2_LAPTOP | {"avx512f", "avx512bw", "avx512_vnni"}


@pytest.mark.parametrize("flags", [set(), AVX2_LAPTOP, AVX512_NO_BF16])
def test_auto_is_float32_on_a_cpu_without_native_bf16(flags: set[str]) -> None:
    choice = choose_dtype("auto", accelerator=False, flags=flags)
    assert choice.dtype == "float32"
    assert "no native bfloat16" in choice.reason and "YAP_DTYPE=bfloat16" in choice.reason


@pytest.mark.parametrize("flag", NATIVE_BF16_FLAGS)
def test_auto_is_bfloat16_on_a_cpu_with_native_bf16(flag: str) -> None:
    choice = choose_dtype("auto", accelerator=False, flags=AVX512_NO_BF16 | {flag})
    assert choice.dtype == "bfloat16"
    assert flag in choice.reason


def test_auto_is_bfloat16_on_a_gpu_whatever_the_host_cpu() -> None:
    assert choose_dtype("auto", accelerator=True, flags=AVX2_LAPTOP).dtype == "bfloat16"


@pytest.mark.parametrize("requested", ["bfloat16", "float16", "float32"])
def test_an_explicit_dtype_wins(requested: str) -> None:
    for accelerator, flags in ((False, AVX2_LAPTOP), (False, {"amx_bf16"}), (True, set())):
        choice = choose_dtype(requested, accelerator=accelerator, flags=flags)
        assert choice.dtype == requested and "explicitly" in choice.reason


@pytest.mark.parametrize("variable", ["YAP_DTYPE", "TRT_DTYPE"])
def test_the_variable_and_the_seeds_name_set_it(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "bfloat16")
    settings = EngineSettings.from_env()
    assert settings.dtype == "bfloat16"
    assert choose_dtype(settings.dtype, accelerator=False, flags=AVX2_LAPTOP).dtype == "bfloat16"


def test_the_default_is_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("YAP_DTYPE", raising=False)
    monkeypatch.delenv("TRT_DTYPE", raising=False)
    assert EngineSettings.from_env().dtype == "auto"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_the_vllm_engine_args_carry_the_chosen_dtype(demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed (make install)")
    from yap_engines.adapters import vllm as adapter

    settings = EngineSettings.from_env(model=str(demo_model_dir))
    monkeypatch.setattr(adapter.VllmEngine, "is_cpu", staticmethod(lambda: True))
    monkeypatch.setattr(adapter, "cpu_flags", lambda: frozenset(AVX2_LAPTOP))
    assert adapter.VllmEngine.engine_args(settings).dtype == "float32"
    monkeypatch.setattr(adapter, "cpu_flags", lambda: frozenset(AVX2_LAPTOP | {"avx512_bf16"}))
    assert adapter.VllmEngine.engine_args(settings).dtype == "bfloat16"
    explicit = settings.model_copy(update={"dtype": "float32"})
    assert adapter.VllmEngine.engine_args(explicit).dtype == "float32"


def test_trt_auto_is_bfloat16(trt: object, demo_model_dir: Path) -> None:
    from trt_support import trt_settings

    from yap_engines.adapters.trt import trt_dtype

    assert trt_dtype(trt_settings(demo_model_dir)).dtype == "bfloat16"
    assert trt_dtype(trt_settings(demo_model_dir, dtype="float16")).dtype == "float16"
