"""Quotas shared through a real Redis (Debian's `redis-server`, started here on a free loopback port and
stopped after): two server processes hold one key to one limit, and a Redis killed mid-test leaves the
configured failure mode (`YAP_LIMITS_REDIS_FAILURE`) in force, logged and counted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from yap_cli.loopback import free_port, listening, serve_on_loopback, stop_process
from yap_engines import FakeEngine
from yap_server.app import create_app

from .conftest import server_settings
from .test_quotas import SECRET, keys_file, post

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs Debian's redis-server (apt-get install -y redis-server)"
)


class RedisProcess:
    """A throwaway `redis-server` on 127.0.0.1 (no persistence)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not listening(self.port):
            assert self.process.poll() is None, "redis-server exited at start-up"
            assert time.monotonic() < deadline, "redis-server did not start within 10 s"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def workers(count: int, keys: Path, redis_url: str) -> Iterator[list[str]]:
    """`count` server processes sharing `redis_url`; yields their origins."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    ports = [free_port() for _ in range(count)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.server.quota_worker", str(port), str(keys), redis_url, "open"],
            cwd=root,
            env=env,
        )
        for port in ports
    ]
    try:
        deadline = time.monotonic() + 120
        for port, process in zip(ports, processes, strict=True):
            while not listening(port):
                assert process.poll() is None, "a worker exited at start-up"
                assert time.monotonic() < deadline, "a worker did not start within 120 s"
                time.sleep(0.1)
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for process in processes:
            process.terminate()  # all at once: they shut down in parallel
        for process in processes:
            stop_process(process)


async def test_two_workers_share_one_limit(tmp_path: Path, redis_server: RedisProcess) -> None:
    path = keys_file(tmp_path, rpm=50)
    with workers(2, path, redis_server.url) as origins:
        limits = httpx.Limits(max_connections=200)
        clients = [httpx.AsyncClient(base_url=origin, limits=limits, timeout=60) for origin in origins]
        try:
            answers = await asyncio.gather(*(post(clients[i % 2], max_tokens=2) for i in range(200)))
            codes = [answer.status_code for answer in answers]
            metrics = [(await c.get("/metrics", headers={"X-API-Key": SECRET})).text for c in clients]
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))
    admitted = codes.count(200)
    assert admitted + codes.count(429) == 200
    assert admitted <= 50, f"{admitted} admitted at rpm 50 across two workers"  # the target: <= 1% over
    assert admitted >= 45, f"only {admitted} admitted: the shared counter refused too much"
    assert all("yap_limits_backend_failures_total" not in m or 'mode="open"} ' not in m for m in metrics)


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_a_redis_outage_keeps_the_configured_failure_mode(
    tmp_path: Path, redis_server: RedisProcess, mode: str
) -> None:
    settings = server_settings(
        keys_file=keys_file(tmp_path, rpm=3), limits_redis_url=redis_server.url, limits_redis_failure=mode
    )
    app = create_app(settings, engines={"chat": FakeEngine(seed=1)})
    async with serve_on_loopback(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert [(await post(http)).status_code for _ in range(4)] == [200, 200, 200, 429]
        redis_server.stop()
        after = [await post(http) for _ in range(4)]
        metrics = (await http.get("/metrics", headers={"X-API-Key": SECRET})).text
    if mode == "open":
        assert [a.status_code for a in after] == [200] * 4  # admitted without limits, and counted
    else:
        assert [a.status_code for a in after] == [503] * 4
        assert after[0].json()["error"]["code"] == "rate_limit_exceeded" and "unreachable" in after[0].text
        assert int(after[0].headers["retry-after"]) >= 1
    failures = [line for line in metrics.splitlines() if line.startswith("yap_limits_backend_failures_total{")]
    assert failures and f'mode="{mode}"' in failures[0] and float(failures[0].split()[-1]) >= 4
