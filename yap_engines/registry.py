"""Engine names -> adapter classes, imported only when asked for.

Each adapter class has `from_settings(settings: EngineSettings)`. `load_engine("vllm", model=...)`
is the notebook entry point: keyword arguments are `EngineSettings` fields.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import BackendUnavailableError, UnknownBackendError
from .protocol import InferenceEngine
from .settings import EngineSettings

BACKENDS: dict[str, str] = {
    "fake": "yap_engines.adapters.fake:FakeEngine",
    "vllm": "yap_engines.adapters.vllm:VllmEngine",
    "trt": "yap_engines.adapters.trt:TrtEngine",
    "openai": "yap_engines.adapters.openai:RemoteEngine",
}


def engine_class(name: str) -> Any:
    """Import and return the adapter class registered under `name`."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise UnknownBackendError(f"unknown engine {name!r}; valid names: {', '.join(BACKENDS)}") from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise BackendUnavailableError(f"the {name!r} engine is not built yet in this version of yap") from exc
        raise
    return getattr(module, attr)


def load_engine(name: str | None = None, settings: EngineSettings | None = None, **fields: Any) -> InferenceEngine:
    """Build the engine `name` (default: `ENGINE` from the environment) from settings.

    `fields` override `EngineSettings` fields, e.g. `load_engine("vllm", model="engines/demo-chat")`.
    """
    if settings is None:
        settings = EngineSettings.from_env(**({"engine": name} if name else {}), **fields)
    elif fields or name:
        settings = EngineSettings.from_env(**{**settings.model_dump(), **fields, **({"engine": name} if name else {})})
    engine: InferenceEngine = engine_class(settings.engine).from_settings(settings)
    return engine
