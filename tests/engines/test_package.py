"""Packaging contracts: light imports, the registry, exported names, settings errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import yap_engines
from yap_engines import (
    EngineSettings,
    FakeEngine,
    SettingsError,
    UnknownBackendError,
    load_engine,
)

HEAVY = ("torch", "vllm", "tensorrt_llm", "transformers")


def test_importing_the_packages_pulls_in_no_backend() -> None:
    code = (
        "import json, sys\n"
        "import yap_engines, yap_server, quant\n"
        "import yap_engines.chat, yap_engines.thinking, yap_engines.demo, yap_server.app, yap_cli.main\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# What `pip install -e .` leaves out: the server extra and the backends. `make install` runs `yap install`
# from exactly that bare environment, so the CLI's entry point must import without any of them.
EXTRAS = (
    "httpx",
    "starlette",
    "uvicorn",
    "websockets",
    "orjson",
    "transformers",
    "prometheus_client",
    "numpy",
    "torch",
    "vllm",
    "tensorrt_llm",
    "opentelemetry",
    "redis",
    "limits",
    "gguf",
    "accelerate",
    "openai",
)


def test_the_cli_entry_point_imports_with_only_the_base_dependencies() -> None:
    code = (
        "import importlib.abc, sys\n"
        f"blocked = {EXTRAS!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in blocked:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (blocked: not a base dependency)')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from yap_cli.main import main\n"
        "sys.argv = ['yap', '--help']\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "install" in out.stdout


def test_the_server_imports_no_cli_client_or_bench_code() -> None:
    code = (
        "import json, sys\nimport yap_server.app\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('yap_cli'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_exported_names_exist() -> None:
    for name in yap_engines.__all__:
        assert hasattr(yap_engines, name), name


def test_unknown_engine_lists_the_valid_names() -> None:
    with pytest.raises(UnknownBackendError, match="fake, vllm, trt, openai"):
        yap_engines.registry.engine_class("llama.cpp")


def test_the_remote_engine_is_registered_as_openai() -> None:
    assert yap_engines.registry.engine_class("openai").__name__ == "RemoteEngine"


def test_load_engine_builds_from_settings_fields() -> None:
    engine = load_engine("fake", fake_text="hello there", fake_tokens_per_s=5)
    assert isinstance(engine, FakeEngine)
    assert (engine.text, engine.tokens_per_s) == ("hello there", 5)


def test_a_bad_variable_fails_naming_it() -> None:
    code = "from yap_engines import EngineSettings; EngineSettings.from_env()"
    env = {**os.environ, "CHAT_MAX_OUT": "lots"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode != 0
    assert "CHAT_MAX_OUT" in out.stderr and "lots" in out.stderr


def test_settings_errors_name_the_variable_and_defaults_leave_room_for_output() -> None:
    with pytest.raises(SettingsError, match="ENGINE"):
        EngineSettings.from_env(engine="llama.cpp")
    settings = EngineSettings(chat_max_len=5025, chat_max_out=150)
    assert settings.max_model_len == 5175


def test_yap_serve_reports_a_bad_setting_and_exits_2() -> None:
    env = {**os.environ, "YAP_PORT": "http", "TEXT_API_KEY": "k", "MAX_CONCURRENT_CONNECTIONS": "2"}
    out = subprocess.run(
        [sys.executable, "-m", "yap_cli", "serve", "--engine", "fake"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2
    assert "YAP_PORT" in out.stderr
