"""TensorRT-LLM fixtures: the adapter bound to the CPU stand-in for `tensorrt_llm` (see trt_support.py).

The stand-in lives in tests/stand_ins and is importable only while a test holds the `trt` fixture:
it goes on `sys.path` for that test, and it and the adapter bound to it leave `sys.modules`
afterwards (another test checks that `import yap_engines` pulls in no `tensorrt_llm`).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from trt_support import STAND_INS, forget_trt, trt_settings


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """`yap_engines.adapters.trt`, imported against the stand-in `tensorrt_llm`."""
    forget_trt()
    monkeypatch.syspath_prepend(str(STAND_INS))
    try:
        yield importlib.import_module("yap_engines.adapters.trt")
    finally:
        forget_trt()


@pytest.fixture
async def trt_engine(trt: ModuleType, demo_model_dir: Path) -> AsyncIterator[Any]:
    """A `TrtEngine` on the demo model (PyTorch backend of the stand-in)."""
    engine = trt.TrtEngine.from_settings(trt_settings(demo_model_dir))
    try:
        yield engine
    finally:
        await engine.aclose()
