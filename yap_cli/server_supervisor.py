"""`yap server start|status|stop`: run a model server for the harness and track it by a manifest.

`start` launches a configured command (`yap serve …`, `python -m vllm.entrypoints.openai.api_server
…`, `vllm serve …`, SGLang's `python -m sglang.launch_server …`) in its own process group with its
output in a log file, polls its health endpoint until it answers 200 or the deadline passes, and
writes the manifest atomically (temp file + rename). `status` reads the manifest and answers
`ready` (health answers 200), `starting` (the process lives but is not healthy yet) or `down`.
`stop` ends only the process the manifest names (pid plus its start time, so a reused pid is never
signalled), its process group included, and waits until the port is free.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from yap_engines.harness.artifacts import write_json_atomic

Health = Literal["ready", "starting", "down"]
HEALTH_PATHS = ("/health", "/healthz")
PRINTED = ("run_id", "health", "port", "manifest_path", "log_file", "started_at_iso")


@dataclass(frozen=True)
class Manifest:
    """What `start` launched; written atomically to `manifest_path`."""

    run_id: str
    health: Health
    port: int
    manifest_path: str
    log_file: str
    started_at_iso: str
    pid: int
    pid_started: str | None
    host: str
    command: list[str]
    health_path: str | None

    def printed(self) -> dict[str, Any]:
        """The fields `start` prints."""
        return {key: getattr(self, key) for key in PRINTED}

    def write(self) -> None:
        write_json_atomic(Path(self.manifest_path), asdict(self))

    @classmethod
    def read(cls, path: Path) -> Manifest | None:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None


def _stat(pid: int) -> list[str] | None:
    """Fields of Linux `/proc/<pid>/stat` after the command name (field 3 onwards), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid`, to tell a process from a later one with the same pid."""
    fields = _stat(pid)
    return fields[19] if fields else None  # field 22 of stat: starttime


def is_ours(manifest: Manifest) -> bool:
    """True while the manifest's process is alive (not a zombie) and is the one `start` launched."""
    try:
        os.kill(manifest.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    fields = _stat(manifest.pid)
    if fields is None:
        return manifest.pid_started is None  # no /proc: the pid is all there is to go by
    return fields[0] not in ("Z", "X") and (manifest.pid_started is None or fields[19] == manifest.pid_started)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def probe(host: str, port: int, paths: Sequence[str]) -> str | None:
    """The first health path that answers 200, or None."""
    import httpx  # the server extra

    for path in paths:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{host}:{port}{path}", timeout=2).status_code == 200:
                return path
    return None


def start_server(
    command: Sequence[str],
    *,
    port: int,
    runs_dir: Path,
    host: str = "127.0.0.1",
    health_path: str | None = None,
    deadline_s: float = 300.0,
    run_id: str | None = None,
    env: dict[str, str] | None = None,
) -> Manifest:
    """Launch `command` (`{port}` in it is replaced), wait for health, write and return the manifest.

    A manifest of a server that is still running refuses a second start. Without `health_path`,
    `/health` (vLLM, SGLang, trtllm-serve) and `/healthz` (Yap) are both tried.
    """
    manifest_path = runs_dir / "server" / "manifest.json"
    current = Manifest.read(manifest_path)
    if current is not None and is_ours(current):
        raise RuntimeError(f"a server from this manifest is still running (pid {current.pid}): `yap server stop` first")
    if not port_is_free(host, port):
        raise RuntimeError(f"port {port} on {host} is already in use: choose another --port")
    run_id = run_id or f"srv-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    log_file = runs_dir / "server" / f"{run_id}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [part.replace("{port}", str(port)) for part in command]
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
        )
    manifest = Manifest(
        run_id=run_id,
        health="starting",
        port=port,
        manifest_path=str(manifest_path),
        log_file=str(log_file),
        started_at_iso=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        pid=process.pid,
        pid_started=process_start_time(process.pid),
        host=host,
        command=argv,
        health_path=health_path,
    )
    manifest.write()
    paths = (health_path,) if health_path else HEALTH_PATHS
    stop_at = time.monotonic() + deadline_s
    while time.monotonic() < stop_at and process.poll() is None:
        found = probe(host, port, paths)
        if found is not None:
            manifest = replace(manifest, health="ready", health_path=found)
            manifest.write()
            return manifest
        time.sleep(0.25)
    health: Health = "starting" if process.poll() is None else "down"
    manifest = replace(manifest, health=health)
    manifest.write()
    return manifest


def server_status(runs_dir: Path) -> tuple[Health, Manifest | None]:
    """`ready`, `starting` or `down`, from the manifest's process and its health endpoint."""
    manifest = Manifest.read(runs_dir / "server" / "manifest.json")
    if manifest is None or not is_ours(manifest):
        return "down", manifest
    paths = (manifest.health_path,) if manifest.health_path else HEALTH_PATHS
    return ("ready" if probe(manifest.host, manifest.port, paths) else "starting"), manifest


def stop_server(runs_dir: Path, *, grace_s: float = 30.0, port_wait_s: float = 30.0) -> Manifest | None:
    """SIGTERM the manifest's process group, SIGKILL it after `grace_s`, wait for the port to be free.

    Returns the updated manifest (health `down`), or None when there was nothing to stop.
    """
    manifest = Manifest.read(runs_dir / "server" / "manifest.json")
    if manifest is None:
        return None
    if is_ours(manifest):
        os.killpg(manifest.pid, signal.SIGTERM)  # its own session: the group is what `start` launched
        stop_at = time.monotonic() + grace_s
        while is_ours(manifest) and time.monotonic() < stop_at:
            _reap(manifest.pid)
            time.sleep(0.1)
        if is_ours(manifest):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(manifest.pid, signal.SIGKILL)
    free_at = time.monotonic() + port_wait_s
    while not port_is_free(manifest.host, manifest.port):
        if time.monotonic() > free_at:
            raise RuntimeError(
                f"port {manifest.port} is still in use {port_wait_s} s after stopping pid {manifest.pid}"
            )
        time.sleep(0.1)
    stopped = replace(manifest, health="down")
    stopped.write()
    return stopped


def _reap(pid: int) -> None:
    """Collect the exit status when `pid` is our own child (a zombie would still look alive)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
