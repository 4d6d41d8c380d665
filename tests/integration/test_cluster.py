"""`yap cluster up` for real: two `yap serve --engine fake` replicas, the real `vllm-router` (from its wheel,
`consistent_hash` on `X-Session-ID`, health checks on `/healthz`) and a Yap front, each a process on loopback.

One cluster serves every check: a session's turns stay on one replica; SIGKILL of that replica mid-turn
leaves the client one continuous stream, the same text as an uninterrupted run; the next turn lands on the
other replica; `yap cluster status` reports it; `yap cluster down` leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from yap_cli.cluster import ClusterManifest, manifest_path, metric_sums, router_binary
from yap_cli.loopback import free_port

pytestmark = pytest.mark.integration

REPLY = " ".join(f"w{i}" for i in range(80)) + "."  # 81 tokens at 40/s: about 2 s per turn
ENV = {
    "TEXT_API_KEY": "k",
    "YAP_FAKE_TEXT": REPLY,
    "YAP_FAKE_TOKENS_PER_S": "40",
    "MAX_CONCURRENT_CONNECTIONS": "32",
}


def _router_installed() -> bool:
    try:
        router_binary()
    except SystemExit:
        return False
    return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ClusterManifest, Path]]:
    if not _router_installed():
        pytest.fail("vllm-router is not installed: `make install` installs it (pyproject's server extra)")
    runs = tmp_path_factory.mktemp("runs")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "ENGINE", "INFERENCE_ENGINE")}
    command = [sys.executable, "-m", "yap_cli", "cluster", "up", "--replicas", "2", "--port", str(port)]
    log = open(runs / "up.log", "w")
    up = subprocess.Popen(
        [*command, "--runs-dir", str(runs), "--grace", "5"], env={**env, **ENV}, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        manifest = None
        while manifest is None and time.monotonic() < deadline:
            assert up.poll() is None, (runs / "up.log").read_text()
            manifest = ClusterManifest.read(manifest_path(runs))
            time.sleep(0.5)
        assert manifest is not None, "yap cluster up did not come up in 120 s"
        yield f"http://127.0.0.1:{port}", manifest, runs
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "yap_cli", "cluster", "down", "--runs-dir", str(runs), "--grace", "5"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        try:
            up.wait(timeout=30)
        finally:
            if up.poll() is None:
                up.kill()
            log.close()
        assert "cluster stopped" in down.stdout or "no cluster" in down.stdout, down.stdout + down.stderr


def turns_served(replica: str) -> float:
    metrics = httpx.get(f"{replica}/metrics", headers={"X-API-Key": "k"}, timeout=5).text
    return metric_sums(metrics).get("yap_requests_total", 0.0)


def stream_turn(front: str, session: str, kill: Any = None, after: int = 8) -> tuple[str, float]:
    """One streamed turn through the front; `kill()` runs after `after` content chunks. Returns the text
    and the longest gap between two chunks (seconds)."""
    body = {"model": "fake", "messages": [{"role": "user", "content": "go"}], "stream": True, "max_tokens": 120}
    headers = {"X-API-Key": "k", "X-Session-ID": session}
    text, chunks, gap, last = "", 0, 0.0, time.monotonic()
    with httpx.stream("POST", f"{front}/v1/chat/completions", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            assert "error" not in event, event
            if not event["choices"] or not event["choices"][0]["delta"].get("content"):
                continue
            now = time.monotonic()
            gap, last = max(gap, now - last) if chunks else 0.0, now
            text += event["choices"][0]["delta"]["content"]
            chunks += 1
            if chunks == after and kill is not None:
                kill()
    return text, gap


def test_a_session_stays_on_its_replica_survives_its_death_and_moves_on(
    cluster: tuple[str, ClusterManifest, Path],
) -> None:
    front, manifest, runs = cluster
    replicas = {m.url: m for m in manifest.of("replica")}
    assert len(replicas) == 2 and len(manifest.of("router")) == 1
    before = {url: turns_served(url) for url in replicas}
    texts = [stream_turn(front, "sess-A")[0] for _ in range(3)]
    assert texts == [REPLY] * 3
    served = {url: turns_served(url) - before[url] for url in replicas}
    (home,) = [url for url, n in served.items() if n > 0]  # every turn of the session on one replica
    assert served[home] == 3
    other = next(url for url in replicas if url != home)
    # SIGKILL the session's replica mid-turn: the client sees one continuous stream, the same text
    before_other = turns_served(other)
    text, _ = stream_turn(front, "sess-A", kill=lambda: os.killpg(replicas[home].pid, signal.SIGKILL))
    assert text == REPLY
    assert turns_served(other) == before_other + 1  # the continuation ran on the other replica
    # the next turn lands on the other replica (the router's health check took the dead one out)
    assert stream_turn(front, "sess-A")[0] == REPLY
    assert turns_served(other) == before_other + 2
    status = httpx.get(f"{front}/status", headers={"X-API-Key": "k"}, timeout=5).json()["replicas"]
    assert status["migrations"] + status["retries"] >= 1 and status["lost"] == 0
    report = subprocess.run(
        [sys.executable, "-m", "yap_cli", "cluster", "status", "--runs-dir", str(runs), "--api-key", "k"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = {row["url"]: row for row in json.loads(report.stdout)["replicas"]}
    assert rows[home]["healthy"] is False and rows[other]["healthy"] is True
    assert rows[other]["prefix_cache_hit_rate"] is not None


def test_cluster_down_leaves_no_process_behind(cluster: tuple[str, ClusterManifest, Path]) -> None:
    _, manifest, runs = cluster
    pids = [m.pid for m in manifest.members if m.pid] + [manifest.pid]
    down = subprocess.run(
        [sys.executable, "-m", "yap_cli", "cluster", "down", "--runs-dir", str(runs), "--grace", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "cluster stopped" in down.stdout, down.stdout + down.stderr
    deadline = time.monotonic() + 15
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _running(pid)]
        time.sleep(0.2)
    assert alive == [], f"left running: {alive}"
    assert not manifest_path(runs).exists()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
