"""A headless Chromium (Debian's `chromium`) driven over the Chrome DevTools Protocol with `websockets`:
just what the dashboard test needs (open a page, evaluate, record every request, take a screenshot)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets

from yap_cli.loopback import stop_process

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,1100",
)


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One tab: commands go to its session; every request it makes is recorded in `requests`."""

    def __init__(self, ws: Any, session_id: str) -> None:
        self.ws = ws
        self.session_id = session_id
        self.requests: list[str] = []
        self.console: list[str] = []
        self._ids = itertools.count(1000)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message and message["id"] in self._waiting:
                self._waiting.pop(message["id"]).set_result(message)
            elif message.get("method") == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
            elif message.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value", "")) for a in message["params"]["args"]))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self.ws.send(json.dumps({"id": ident, "method": method, "params": params, "sessionId": self.session_id}))
        async with asyncio.timeout(30):
            reply = await future
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        data = (await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True))["data"]
        await asyncio.to_thread(_write, path, base64.b64decode(data))

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@contextlib.asynccontextmanager
async def headless_page() -> AsyncIterator[Page]:
    """A fresh Chromium (its own profile directory) and one page with network recording on."""
    binary = chromium_binary()
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="yap-chromium-") as profile:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, read from a thread
            [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            url = await asyncio.wait_for(asyncio.to_thread(_devtools_url, process), 60)
            async with websockets.connect(url, max_size=64 * 2**20) as ws:
                await ws.send(json.dumps({"id": 1, "method": "Target.createTarget", "params": {"url": "about:blank"}}))
                target = await _reply(ws, 1)
                params = {"targetId": target["targetId"], "flatten": True}
                await ws.send(json.dumps({"id": 2, "method": "Target.attachToTarget", "params": params}))
                session = await _reply(ws, 2)
                page = Page(ws, session["sessionId"])
                try:
                    for domain in ("Page", "Network", "Runtime"):
                        await page.call(f"{domain}.enable")
                    yield page
                finally:
                    await page.close()
        finally:
            stop_process(process, grace_s=15)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _devtools_url(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    for line in process.stderr:
        if match := re.search(r"DevTools listening on (ws://\S+)", line):
            return match.group(1)
    raise RuntimeError(f"chromium exited ({process.wait()}) before it listened for DevTools")


async def _reply(ws: Any, ident: int) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            message = json.loads(await ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(str(message["error"]))
                return dict(message["result"])
