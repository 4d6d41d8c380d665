"""Seed-style configuration: every seed variable is honoured as an alias of a Yap setting, or stops
start-up with a message naming it and what to set instead. Yap's own name wins over a seed alias."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from yap_cli.main import main
from yap_engines import EngineSettings, FakeEngine, SettingsError
from yap_engines.tool import ToolSettings
from yap_server.app import create_app
from yap_server.seed_settings import SeedSettings
from yap_server.settings import ServerSettings
from yap_server.telemetry import TelemetrySettings

KEY = "seed-key"
SEED_ENV = (  # everything a seed env file may set that these tests touch
    "MODEL", "YAP_MODEL", "CHAT_MODEL", "AWQ_CHAT_MODEL", "AWQ_TOOL_MODEL", "TRT_ENGINE_DIR", "TRT_CHECKPOINT_DIR",
    "MODEL_NAME", "TOOL_MODEL", "ENFORCE_EAGER", "TRT_DTYPE", "TENSOR_PARALLEL", "KV_DTYPE", "ENGINE",
    "INFERENCE_ENGINE", "CHAT_GPU_FRAC", "TOOL_GPU_FRAC", "CACHE_RESET_INTERVAL_SECONDS",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SEED_ENV:
        monkeypatch.delenv(name, raising=False)


def read(cls: Any, field: str) -> Any:
    return getattr(cls.from_env(), field)


HONOURED = [  # seed variable, value, Yap settings class, field, expected value
    ("CHAT_MODEL", "org/chat", EngineSettings, "model", "org/chat"),
    ("AWQ_CHAT_MODEL", "yapwithai/impish-12b-awq", EngineSettings, "model", "yapwithai/impish-12b-awq"),
    ("TRT_ENGINE_DIR", "/models/engine", EngineSettings, "model", "/models/engine"),
    ("TRT_CHECKPOINT_DIR", "/models/ckpt", EngineSettings, "model", "/models/ckpt"),
    ("MODEL_NAME", "Qwen/Qwen3-8B", EngineSettings, "model", "Qwen/Qwen3-8B"),
    ("AWQ_TOOL_MODEL", "yapwithai/tool-awq", ToolSettings, "tool_model", "yapwithai/tool-awq"),
    ("TOOL_MODEL", "org/tool", ToolSettings, "tool_model", "org/tool"),
    ("ENFORCE_EAGER", "1", EngineSettings, "vllm_enforce_eager", True),
    ("ENFORCE_EAGER", "0", EngineSettings, "vllm_enforce_eager", False),
    ("TRT_DTYPE", "float16", EngineSettings, "dtype", "float16"),
    ("TENSOR_PARALLEL", "2", EngineSettings, "vllm_tensor_parallel_size", 2),
    ("KV_DTYPE", "fp8", EngineSettings, "kv_dtype", "fp8"),
    ("INFERENCE_ENGINE", "vllm", EngineSettings, "engine", "vllm"),
    ("CACHE_RESET_INTERVAL_SECONDS", "600", EngineSettings, "cache_reset_interval_s", 600.0),
    ("CHAT_GPU_FRAC", "0.6", EngineSettings, "chat_gpu_frac", 0.6),
    ("TOOL_GPU_FRAC", "0.25", ToolSettings, "tool_gpu_frac", 0.25),
    ("TRT_MAX_BATCH_SIZE", "32", EngineSettings, "trt_max_batch_size", 32),
    ("TRT_BATCH_SIZE", "16", EngineSettings, "trt_batch_size", 16),
    ("TRT_KV_FREE_GPU_FRAC", "0.5", EngineSettings, "trt_kv_free_gpu_frac", 0.5),
    ("TRT_MAX_INPUT_LEN", "4000", EngineSettings, "trt_max_input_len", 4000),
    ("TRT_MAX_OUTPUT_LEN", "100", EngineSettings, "trt_max_output_len", 100),
    ("CHAT_MAX_LEN", "4000", EngineSettings, "chat_max_len", 4000),
    ("CHAT_MAX_OUT", "100", EngineSettings, "chat_max_out", 100),
    ("TOOL_HISTORY_TOKENS", "64", ToolSettings, "tool_history_tokens", 64),
    ("TOOL_MAX_LENGTH", "256", ToolSettings, "tool_max_length", 256),
    ("AXIOM_ENVIRONMENT", "staging", TelemetrySettings, "environment", "staging"),
    ("AXIOM_DATASET", "my-dataset", TelemetrySettings, "axiom_dataset", "my-dataset"),
    ("OTEL_SERVICE_NAME", "svc", TelemetrySettings, "service_name", "svc"),
    ("OTEL_METRICS_EXPORT_INTERVAL_MS", "1000", TelemetrySettings, "metrics_export_interval_ms", 1000),
    ("OTEL_TRACES_EXPORT_INTERVAL_MS", "1000", TelemetrySettings, "traces_export_interval_ms", 1000),
    ("OTEL_TRACES_BATCH_SIZE", "64", TelemetrySettings, "traces_batch_size", 64),
    ("CLOUD_PLATFORM", "runpod", TelemetrySettings, "cloud_platform", "runpod"),
    ("SENTRY_ENVIRONMENT", "staging", TelemetrySettings, "sentry_environment", "staging"),
    ("SENTRY_SAMPLE_RATE", "0.5", TelemetrySettings, "sentry_sample_rate", 0.5),
]


@pytest.mark.parametrize(
    ("name", "given", "cls", "field", "expected"), HONOURED, ids=[f"{h[0]}={h[1]}" for h in HONOURED]
)
def test_a_seed_variable_is_honoured(
    monkeypatch: pytest.MonkeyPatch, name: str, given: str, cls: Any, field: str, expected: Any
) -> None:
    monkeypatch.setenv(name, given)
    assert read(cls, field) == expected


SERVER_HONOURED = [  # ServerSettings needs its required key, so these read it with one
    ("DEPLOY_MODELS", "chat", "deploy_mode", "chat"),
    ("ORCH_LOG_LEVEL", "INFO", "log_level", "info"),
    ("MAX_CONCURRENT_CONNECTIONS", "7", "max_concurrent_connections", 7),
    ("WS_IDLE_TIMEOUT_S", "30", "ws_idle_timeout_s", 30),
    ("FINAL_MAX_TOKENS", "64", "final_max_tokens", 64),
]


@pytest.mark.parametrize(("name", "given", "field", "expected"), SERVER_HONOURED, ids=[s[0] for s in SERVER_HONOURED])
def test_a_seed_server_variable_is_honoured(
    monkeypatch: pytest.MonkeyPatch, name: str, given: str, field: str, expected: Any
) -> None:
    monkeypatch.setenv(name, given)
    monkeypatch.setenv("TEXT_API_KEY", KEY)
    if name != "MAX_CONCURRENT_CONNECTIONS":
        monkeypatch.setenv("MAX_CONCURRENT_CONNECTIONS", "4")
    settings = ServerSettings.from_env()
    assert getattr(settings, field) == expected


REFUSED = [  # seed variable, value, settings class, a word of the alternative the message names
    ("KV_DTYPE", "int8", EngineSettings, "fp8"),
    ("TRT_REPO_DIR", ".trtllm-repo", SeedSettings, "YAP_QUANT_VENV"),
    ("MPI_VERSION_PIN", "4.1.6", SeedSettings, "pip"),
    ("AWQ_CACHE_DIR", ".awq", SeedSettings, "YAP_ENGINES_DIR"),
    ("WS_CLOSE_IDLE_CODE", "1000", SeedSettings, "4000"),
    ("CONCURRENT_MODEL_CALL", "0", SeedSettings, "set it to 1"),
    ("ORCH_ENABLE_REQUEST_LOGS", "true", SeedSettings, "LOG_LEVEL=debug"),
]


@pytest.mark.parametrize(("name", "given", "cls", "alternative"), REFUSED, ids=[f"{r[0]}={r[1]}" for r in REFUSED])
def test_a_seed_variable_yap_cannot_honour_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, given: str, cls: Any, alternative: str
) -> None:
    monkeypatch.setenv(name, given)
    with pytest.raises(SettingsError) as refused:
        cls.from_env()
    assert name in str(refused.value) and alternative in str(refused.value)
    if cls is SeedSettings:  # and create_app, reading the environment, stops the same way
        with pytest.raises(SettingsError, match=name):
            create_app()


@pytest.mark.parametrize(
    ("name", "given"),
    [("WS_CLOSE_IDLE_CODE", "4000"), ("CONCURRENT_MODEL_CALL", "1"), ("ORCH_ENABLE_REQUEST_LOGS", "false")],
)
def test_a_seed_variable_that_states_what_yap_does_is_accepted(
    monkeypatch: pytest.MonkeyPatch, name: str, given: str
) -> None:
    monkeypatch.setenv(name, given)
    assert SeedSettings.from_env().problems() == []


def test_yap_names_win_over_seed_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_MODEL", "seed/chat")
    monkeypatch.setenv("TRT_ENGINE_DIR", "/seed/engine")
    assert EngineSettings.from_env().model == "/seed/engine"  # a built engine before the model it came from
    monkeypatch.setenv("MODEL", "yap/chat")
    assert EngineSettings.from_env().model == "yap/chat"
    monkeypatch.setenv("AWQ_TOOL_MODEL", "seed/tool")
    monkeypatch.setenv("TOOL_MODEL", "yap/tool")
    assert ToolSettings.from_env().tool_model == "yap/tool"
    monkeypatch.setenv("ENFORCE_EAGER", "1")
    monkeypatch.setenv("YAP_VLLM_ENFORCE_EAGER", "0")
    assert EngineSettings.from_env().vllm_enforce_eager is False


def test_both_mode_splits_the_gpu_as_the_seed_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from yap_server import state

    loaded: dict[str, Any] = {}
    monkeypatch.setattr(state, "load_engine", lambda settings: loaded.setdefault("chat", settings))
    monkeypatch.setattr(state.ToolClassifier, "load", lambda model, settings: loaded.setdefault("tool", settings))
    both = ServerSettings(text_api_key=KEY, max_concurrent_connections=1, deploy_mode="both")
    state.load_parts(both, EngineSettings(engine="fake"), ToolSettings())
    assert (loaded["chat"].chat_gpu_frac, loaded["tool"].tool_gpu_frac) == (0.7, 0.2)

    loaded.clear()
    state.load_parts(both, EngineSettings(engine="fake", chat_gpu_frac=0.6), ToolSettings(tool_gpu_frac=0.25))
    assert (loaded["chat"].chat_gpu_frac, loaded["tool"].tool_gpu_frac) == (0.6, 0.25)  # set ones are kept

    loaded.clear()
    chat_only = ServerSettings(text_api_key=KEY, max_concurrent_connections=1, deploy_mode="chat")
    state.load_parts(chat_only, EngineSettings(engine="fake"), None)
    assert loaded["chat"].chat_gpu_frac == 0.9 and "tool" not in loaded


class ResettableEngine(FakeEngine):
    """A fake engine with a prefix cache to reset, counting the resets."""

    def __init__(self) -> None:
        super().__init__(seed=1)
        self.resets = 0

    async def reset_prefix_cache(self) -> bool:
        self.resets += 1
        return True


def test_cache_reset_interval_resets_the_prefix_cache_and_counts_it() -> None:
    engine = ResettableEngine()
    server = ServerSettings(text_api_key=KEY, max_concurrent_connections=1, deploy_mode="chat")
    app = create_app(server, engines={"chat": engine}, engine_settings=EngineSettings(cache_reset_interval_s=0.05))
    with TestClient(app) as client:
        time.sleep(0.3)  # the lifespan's loop runs in the client's thread
        metrics = client.get("/metrics", headers={"X-API-Key": KEY}).text
    assert engine.resets >= 2
    counted = next(line for line in metrics.splitlines() if line.startswith("yap_cache_resets_total "))
    assert 2 <= float(counted.split()[1]) <= engine.resets  # one more may run after the scrape


def test_cache_reset_is_off_by_default_and_refused_for_an_engine_without_a_prefix_cache() -> None:
    assert EngineSettings().cache_reset_interval_s == 0
    server = ServerSettings(text_api_key=KEY, max_concurrent_connections=1, deploy_mode="chat")
    app = create_app(server, engines={"chat": FakeEngine()}, engine_settings=EngineSettings(cache_reset_interval_s=5))
    with pytest.raises(SettingsError, match="CACHE_RESET_INTERVAL_SECONDS"):
        with TestClient(app):
            pass
    with pytest.raises(SettingsError, match=r"CACHE_RESET_INTERVAL_SECONDS=600 .* ENGINE=trt"):
        EngineSettings.from_env(engine="trt", cache_reset_interval_s=600)  # refused before any engine loads


@pytest.mark.parametrize(("flag", "engine"), [("--vllm", "vllm"), ("--trt", "trt")])
def test_serve_takes_the_seed_engine_flags(monkeypatch: pytest.MonkeyPatch, flag: str, engine: str) -> None:
    import yap_cli.serve as cli

    chosen: dict[str, Any] = {}

    def stop_after_reading(**overrides: Any) -> EngineSettings:
        chosen.update(overrides)
        raise SettingsError("stop here")

    monkeypatch.setenv("TEXT_API_KEY", KEY)
    monkeypatch.setenv("MAX_CONCURRENT_CONNECTIONS", "1")
    monkeypatch.setattr(cli.EngineSettings, "from_env", stop_after_reading)
    assert main(["serve", flag]) == 2
    assert chosen["engine"] == engine


def test_serve_refuses_a_flag_that_contradicts_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXT_API_KEY", KEY)
    monkeypatch.setenv("MAX_CONCURRENT_CONNECTIONS", "1")
    with pytest.raises(SystemExit, match="--vllm and --engine trt"):
        main(["serve", "--vllm", "--engine", "trt"])


def test_the_vllm_adapter_resets_vllms_prefix_cache() -> None:
    vllm_adapter = pytest.importorskip("yap_engines.adapters.vllm")
    from vllm.v1.engine.async_llm import AsyncLLM

    assert callable(AsyncLLM.reset_prefix_cache)  # the installed vLLM has the call the adapter makes

    class StubAsyncLLM:
        calls = 0

        async def reset_prefix_cache(self) -> bool:
            StubAsyncLLM.calls += 1
            return True

    engine = vllm_adapter.VllmEngine(StubAsyncLLM(), model_id="m")
    assert asyncio.run(engine.reset_prefix_cache()) is True and StubAsyncLLM.calls == 1
