"""One error tree for quantization and builds. Every message names the setting and the fix.

QuantError
├── PlanError                 the requested plan cannot be made (also a ValueError)
│   ├── NoGpuError            the choice depends on the GPU and none was found or given
│   └── UnsupportedOnArchError the method does not run on this GPU; names the GPU and the options
├── QuantEnvError             the quantization environment (.venv-quant) is missing or broken
├── RunnerError               a quantization runner (llm-compressor, ModelOpt, trtllm-build) failed
└── PushError                 publishing to the Hugging Face Hub failed or was misconfigured
"""

from __future__ import annotations


class QuantError(Exception):
    """Base of every error raised by `quant`."""


class PlanError(QuantError, ValueError):
    """The requested quantization plan cannot be made; the message says why and what to pass instead."""


class NoGpuError(PlanError):
    """The plan depends on the GPU's SM architecture and no GPU was found or given."""


class UnsupportedOnArchError(PlanError):
    """A method the GPU cannot run was asked for (never silently downgraded)."""


class QuantEnvError(QuantError):
    """The quantization environment is missing or its install failed."""


class RunnerError(QuantError):
    """A runner subprocess failed; `log` is the path of its log, when there is one."""

    def __init__(self, message: str, log: str | None = None) -> None:
        super().__init__(message if log is None else f"{message} (log: {log})")
        self.log = log


class PushError(QuantError):
    """A push to the Hugging Face Hub failed or is misconfigured."""
