"""Helpers for tests that run `yap serve` as a real process: start it, wait for its health check."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx


def serve_env(port: int, **settings: str) -> dict[str, str]:
    """The environment of a `yap serve` on `port` with API key `k`: this one, without a model or engine
    chosen by the caller's shell, `settings` on top."""
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "ENGINE", "INFERENCE_ENGINE")}
    return {**env, "YAP_PORT": str(port), "TEXT_API_KEY": "k", **settings}


def yap_serve(args: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[str]:
    """`yap serve ARGS` as a real process, logging to `log`."""
    command = [sys.executable, "-m", "yap_cli", "serve", *args]
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_for_health(process: subprocess.Popen[str], port: int, timeout: float = 240) -> httpx.Response:
    """The first answer of `/healthz` (failing when the process exits or `timeout` s pass first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "yap serve exited during start-up"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        except httpx.TransportError:
            time.sleep(0.5)
    raise AssertionError("yap serve did not answer /healthz in time")
