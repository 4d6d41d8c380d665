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
from remote_support import API_KEY, ChatMLMessages, VllmServer, start_vllm_server, stop_vllm_server
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


# -- the remote (`openai`) engine ------------------------------------------------------------------


@pytest.fixture(scope="session")
def remote_vllm_server(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One real vLLM OpenAI server (CPU build) on the demo model, for the whole session."""
    pytest.importorskip("vllm", reason="vLLM is not installed (make install)")
    server = start_vllm_server(demo_model_dir, tmp_path_factory.mktemp("vllm-server") / "server.log")
    try:
        yield server
    finally:
        stop_vllm_server(server)


@pytest.fixture(scope="session")
async def remote_vllm_engine(remote_vllm_server: VllmServer, demo_tokenizer: Any) -> AsyncIterator[ChatMLMessages]:
    """`RemoteEngine` against the real vLLM server, fed the suite's prompts as chat messages."""
    from yap_engines.adapters.openai import RemoteEngine

    engine = ChatMLMessages(RemoteEngine(remote_vllm_server.url, api_key=API_KEY), demo_tokenizer)
    try:
        yield engine
    finally:
        await engine.aclose()


@pytest.fixture(scope="session")
async def remote_yap_engine(vllm_engine: Any, demo_tokenizer: Any) -> AsyncIterator[ChatMLMessages]:
    """`RemoteEngine` against Yap's own /v1/chat/completions (on loopback) over the in-process vLLM engine."""
    from yap_cli.loopback import serve_on_loopback
    from yap_engines.adapters.openai import RemoteEngine
    from yap_server.app import create_app
    from yap_server.settings import ServerSettings

    settings = ServerSettings(text_api_key=API_KEY, max_concurrent_connections=8, deploy_mode="chat", chat_max_out=200)
    async with serve_on_loopback(create_app(settings, engines={"chat": vllm_engine})) as port:
        engine = ChatMLMessages(RemoteEngine(f"http://127.0.0.1:{port}", api_key=API_KEY), demo_tokenizer)
        try:
            yield engine
        finally:
            await engine.aclose()
