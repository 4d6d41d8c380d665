"""`YAP_DTYPE=auto`: the weights dtype that runs at full speed on this processor.

bfloat16 halves the memory of float32 and is native on GPUs. On a CPU it is native only with the
`avx512_bf16` or `amx_bf16` instructions; elsewhere (AVX2 laptops, many cloud CPUs) vLLM's CPU build
emulates it, and a 135M model's first token takes about 5x longer than in float32. So `auto` means
bfloat16 on a GPU and on a CPU with native bf16, and float32 on any other CPU. An explicit
`YAP_DTYPE` (or the seed's `TRT_DTYPE`) always wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (as `/proc/cpuinfo` spells them) that make bfloat16 matrix work native."""

CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype an engine loads its weights in, and why (logged at start-up, shown on `/status`)."""

    dtype: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"dtype": self.dtype, "reason": self.reason}


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """This machine's CPU flags (the first `flags` line of `/proc/cpuinfo`); empty where it cannot be read."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def choose_dtype(requested: str, *, accelerator: bool, flags: Iterable[str]) -> DtypeChoice:
    """Resolve `requested` (`YAP_DTYPE`): anything but `auto` is kept; `auto` follows the processor.

    `accelerator` is True on a GPU; `flags` are the CPU's flags (only read on a CPU)."""
    if requested != "auto":
        return DtypeChoice(requested, f"YAP_DTYPE={requested} (set explicitly)")
    if accelerator:
        return DtypeChoice("bfloat16", "auto: bfloat16 on a GPU")
    native = sorted(set(flags) & set(NATIVE_BF16_FLAGS))
    if native:
        return DtypeChoice("bfloat16", f"auto: this CPU has native bfloat16 ({', '.join(native)})")
    return DtypeChoice(
        "float32",
        "auto: float32, because this CPU has no native bfloat16 (neither avx512_bf16 nor amx_bf16), "
        "and emulated bfloat16 runs about 5x slower; set YAP_DTYPE=bfloat16 to force it",
    )
