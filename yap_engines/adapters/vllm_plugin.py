"""Yap's vLLM plugin: loaded by vLLM itself in every process it starts (entry point group
`vllm.general_plugins`, declared in pyproject.toml), the engine core and each worker included.

It asks Linux for permission to use AMX tiles (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, through PyTorch's
`torch.cpu._init_amx`). A process must ask before its first AMX instruction or it dies of SIGILL. oneDNN
asks for itself, but vLLM's CPU attention kernel (the `amx` variant it picks for bfloat16 on such CPUs)
does not, and torch.compile is what happens to ask otherwise. So in eager mode (Yap's CPU default) with
bfloat16 (`YAP_DTYPE=auto` on an AMX CPU), an engine whose first request is a few tokens long lost its
worker with exit code -4 before its first token. The permission is per process, and vLLM's workers are
spawned, so it has to be asked for in each of them: exactly what a general plugin is for.
"""

from __future__ import annotations


def request_amx() -> None:
    """Ask for AMX permission where the CPU has AMX; a no-op anywhere else, and safe to call repeatedly."""
    import torch  # every vLLM process has it loaded already

    init = getattr(torch.cpu, "_init_amx", None)
    if init is not None:
        init()
