"""Emulate an AVX2-only CPU (no AVX-512, no AVX-512 bf16, no AMX) on a newer one, for benchmarks only.

`benchmarks/smollm2_cpu.py --emulate-avx2` puts this directory on `PYTHONPATH`, so every Python process
it starts runs this file at start-up, vLLM's engine-core process included. The library knobs
(`ONEDNN_MAX_CPU_ISA=AVX2` for oneDNN, `ATEN_CPU_CAPABILITY=avx2` for PyTorch's own kernels,
`MKL_ENABLE_INSTRUCTIONS=AVX2` for MKL) do not reach vLLM's CPU build: it picks its kernel library
(`_C` for AVX-512 with bf16, `_C_AVX512`, `_C_AVX2`), its attention ISA (AMX or not) and its GEMM path
from `torch.cpu._is_*_supported()`, which read the processor itself. So when `torch.cpu` is imported,
those probes are replaced by ones that answer False, as they would on an AVX2 machine.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from typing import Any

PROBES = (
    "_is_avx512_supported",
    "_is_avx512_bf16_supported",
    "_is_vnni_supported",
    "_is_amx_tile_supported",
    "_is_amx_fp16_supported",
)


def _no() -> bool:
    return False


class _TorchCpuProbes(importlib.abc.MetaPathFinder):
    """Lets `torch.cpu` load as usual, then makes its AVX-512/AMX probes answer False."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "torch.cpu":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            for name in PROBES:
                if hasattr(module, name):
                    setattr(module, name, _no)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if os.environ.get("YAP_BENCH_EMULATE_AVX2") == "1" and not any(isinstance(f, _TorchCpuProbes) for f in sys.meta_path):
    sys.meta_path.insert(0, _TorchCpuProbes())
