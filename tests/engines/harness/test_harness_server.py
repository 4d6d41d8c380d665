"""`yap server start|status|stop` with a real `yap serve --engine fake` process, and `yap infer` against it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from harness_support import yap_cli

from yap_cli.loopback import free_port
from yap_cli.server_supervisor import Manifest, is_ours, port_is_free, process_start_time, stop_server

pytestmark = pytest.mark.integration

SERVE_ENV = {
    "TEXT_API_KEY": "lifecycle-key",
    "MAX_CONCURRENT_CONNECTIONS": "4",
    "DEPLOY_MODE": "chat",
    "YAP_FAKE_TEXT": "<think>weighing it</think>Forty-two.",
}


async def test_start_status_infer_stop(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    port = free_port()
    code, _, err = await yap_cli("server", "status", "--runs-dir", str(runs))
    assert (code, err) == (1, "")

    serve = [sys.executable, "-m", "yap_cli", "serve", "--engine", "fake", "--port", "{port}"]
    code, out, err = await yap_cli(
        "server", "start", "--port", str(port), "--runs-dir", str(runs), "--run-id", "lc1", "--", *serve, env=SERVE_ENV
    )
    assert code == 0, err
    try:
        await _check_running_server(runs, port, json.loads(out), serve)
    finally:
        stop_server(runs)  # whatever failed above, the server does not outlive the test


async def _check_running_server(runs: Path, port: int, printed: dict[str, Any], serve: list[str]) -> None:
    manifest_path = runs / "server" / "manifest.json"
    assert sorted(printed) == ["health", "log_file", "manifest_path", "port", "run_id", "started_at_iso"]
    assert (printed["run_id"], printed["health"], printed["port"]) == ("lc1", "ready", port)
    assert printed["manifest_path"] == str(manifest_path)
    manifest = Manifest.read(manifest_path)
    assert manifest is not None and manifest.printed() == printed and manifest.health_path in ("/health", "/healthz")
    assert manifest.command[-1] == str(port) and process_start_time(manifest.pid) == manifest.pid_started
    assert not list(manifest_path.parent.glob(".*.tmp"))  # written by rename, nothing half-written left

    code, out, _ = await yap_cli("server", "status", "--runs-dir", str(runs))
    assert (code, out.strip()) == (0, "ready")

    # A second start while it runs is refused, and does not touch the running server.
    code, _, err = await yap_cli("server", "start", "--port", str(free_port()), "--runs-dir", str(runs), "--", *serve)
    assert code == 1 and "still running" in err

    # `yap infer` finds the managed server's run id and log file for its bookmarks.
    code, out, err = await yap_cli(
        "infer", "--target", f"openai:http://127.0.0.1:{port}", "--api-key", "lifecycle-key",
        "--prompt", "What is the answer?", "--runs-dir", str(runs), "--model-kind", "thinking", "--max-tokens", "64",
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    assert record["response_snapshot"]["assistant_reasoning_text"] == "weighing it"
    assert record["response_snapshot"]["assistant_content_text"] == "Forty-two."
    assert record["prom_bookmark"]["container_run_id"] == "lc1"
    anchor = record["container_log_anchor"]
    assert anchor["path"] == printed["log_file"]
    assert (
        anchor["window"]
        == record["prom_bookmark"]["window"]
        == {
            "start_ts": record["timings"]["start_ts"],
            "end_ts": record["timings"]["end_ts"],
        }
    )
    assert record["request_snapshot"]["thinking_hint"] == "qwen-thinking"
    # One-shot runs leave their artifacts in the managed server's run folder, as scenario runs do.
    test_dir = runs / "lc1" / "inference" / record["test_id"]
    transcript = json.loads((test_dir / "transcript.json").read_text())
    assert transcript["turns"][0]["assistant_content_text"] == "Forty-two."
    assert json.loads((test_dir / "metrics.json").read_text())["status"] == "ok"
    assert record["request_snapshot"]["sampling"]["temperature"] == 0.6

    code, out, err = await yap_cli("server", "stop", "--runs-dir", str(runs))
    assert code == 0, err
    assert json.loads(out) == {"run_id": "lc1", "health": "down", "port": port}
    assert not is_ours(manifest)  # gone (at most a zombie awaiting its reaper)
    assert port_is_free("127.0.0.1", port)
    code, out, _ = await yap_cli("server", "status", "--runs-dir", str(runs))
    assert (code, out.strip()) == (1, "down")
    assert "Application shutdown complete" in await asyncio.to_thread(Path(printed["log_file"]).read_text)


async def test_a_command_that_dies_is_reported_down(tmp_path: Path) -> None:
    code, out, err = await yap_cli(
        "server", "start", "--port", str(free_port()), "--runs-dir", str(tmp_path), "--deadline", "30",
        "--", sys.executable, "-c", "print('bad flag'); raise SystemExit(3)",
    )  # fmt: skip
    assert code == 1
    assert json.loads(out)["health"] == "down"
    assert "see" in err and "bad flag" in await asyncio.to_thread(Path(json.loads(out)["log_file"]).read_text)
