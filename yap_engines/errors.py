"""One error tree for every engine. Adapters map backend exceptions into it (`raise ... from exc`).

EngineError
├── GenerationError            one request failed; the engine is still usable
├── EngineDeadError            the engine is gone; health fails, nothing more will run
├── BackendUnavailableError    a backend package is missing (also an ImportError); says what to install
├── UnknownBackendError        an engine name that the registry does not know (also a ValueError)
└── InvalidRequestError        the request itself is wrong (also a ValueError)
    ├── InvalidSamplingError   a sampling key is out of range or ill-typed; `.key` names it
    ├── ContextTooLongError    the prompt cannot fit the model's context
    └── UnsupportedFeature     the backend cannot honour a requested parameter; `.feature` names it
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error raised through the engine seam."""


class GenerationError(EngineError):
    """A single request failed (recoverable: other requests and the engine go on)."""


class EngineDeadError(EngineError):
    """The engine has died or been closed; it must be rebuilt before serving again."""


class BackendUnavailableError(EngineError, ImportError):
    """A backend (vllm, tensorrt_llm, torch, ...) is not installed or not built yet."""


class UnknownBackendError(EngineError, ValueError):
    """An engine name that the registry does not know."""


class InvalidRequestError(EngineError, ValueError):
    """The request is malformed; the message says what to change."""


class InvalidSamplingError(InvalidRequestError):
    """A sampling parameter is out of range or of the wrong type."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"sampling.{key}: {message}")
        self.key = key


class ContextTooLongError(InvalidRequestError):
    """The prompt (at least the persona) cannot fit the model's context."""


class UnsupportedFeature(InvalidRequestError):
    """The backend cannot honour a parameter; raised instead of silently dropping it."""

    def __init__(self, feature: str, backend: str, hint: str = "") -> None:
        message = f"{backend} does not support {feature}"
        super().__init__(f"{message}; {hint}" if hint else message)
        self.feature = feature
        self.backend = backend
