"""SM detection: NVML first (simulated here: no driver on these machines), then torch, and SM= / --sm overrides."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from typing import Any

import pytest

from quant import gpu
from quant.errors import PlanError


@pytest.mark.parametrize(
    ("text", "sm"), [("90", 90), (90, 90), ("sm90", 90), ("SM_86", 86), ("8.9", 89), ("12.0", 120)]
)
def test_sm_spellings(text: str | int, sm: int) -> None:
    assert gpu.parse_sm(text) == sm


def test_bad_sm_values_name_the_setting() -> None:
    with pytest.raises(PlanError, match=r"SM='hopper' is not an SM architecture: pass e.g. SM=90"):
        gpu.parse_sm("hopper")
    with pytest.raises(PlanError, match=r"SM=75 is not in the capability table; supported: sm80"):
        gpu.parse_sm("7.5")


def test_the_flag_wins_over_the_environment_which_wins_over_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "detect_gpu", lambda: gpu.Gpu(80, "detected", "nvml"))
    assert gpu.resolve_sm("90", "86") == gpu.Gpu(90, "H100 / H200 / GH200", "flag")
    assert gpu.resolve_sm(None, "86") == gpu.Gpu(86, "A10 / A40 / RTX 30", "env")
    assert gpu.resolve_sm(None, "") == gpu.Gpu(80, "detected", "nvml")
    assert gpu.resolve_sm(None, None, detect=False) is None


class FakeNvml(types.ModuleType):
    """Stands in for `pynvml` (there is no NVIDIA driver here); records init/shutdown."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices: list[tuple[tuple[int, int], Any]], fail_init: bool = False) -> None:
        super().__init__("pynvml")
        self.__spec__ = importlib.machinery.ModuleSpec("pynvml", None)
        self.devices = devices
        self.fail_init = fail_init
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        return self.devices[handle][0]

    def nvmlDeviceGetName(self, handle: int) -> Any:
        return self.devices[handle][1]


def test_nvml_reports_the_first_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml([((9, 0), b"NVIDIA H100 80GB HBM3"), ((8, 6), "NVIDIA A10")])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert gpu.detect_nvml() == gpu.Gpu(90, "NVIDIA H100 80GB HBM3", "nvml")
    assert nvml.calls == ["init", "shutdown"]


def test_nvml_without_a_driver_or_device_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([], fail_init=True))
    assert gpu.detect_nvml() is None
    empty = FakeNvml([])
    monkeypatch.setitem(sys.modules, "pynvml", empty)
    assert gpu.detect_nvml() is None
    assert empty.calls == ["init", "shutdown"]


def test_torch_is_the_fallback_and_agrees_with_cuda_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(gpu, "detect_nvml", lambda: None)
    found = gpu.detect_gpu()
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        assert found == gpu.Gpu(major * 10 + minor, torch.cuda.get_device_name(0), "torch")
    else:
        assert found is None
