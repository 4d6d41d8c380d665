"""The dashboard in a real headless Chromium (Debian's `chromium`, over the DevTools protocol) under a
scripted load: every panel has data, the page made no request beyond this server, the key left the
address bar, and the screenshot is saved as a test artifact (`test-artifacts/dashboard.png`, or
`$YAP_TEST_ARTIFACTS/dashboard.png`)."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from yap_cli.loopback import serve_on_loopback
from yap_server import dashboard_page
from yap_server.app import create_app

from .cdp import chromium_binary, headless_page
from .conftest import KEY, RecordingFake, server_settings
from .test_quotas import SECRET, keys_file, post
from .test_streaming_core import StubClassifier

pytestmark = pytest.mark.skipif(
    chromium_binary() is None, reason="needs Debian's chromium (apt-get install -y chromium)"
)

ARTIFACTS = Path(os.environ.get("YAP_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
PANELS = [name for name, _ in dashboard_page.PANELS]


async def ws_turns(origin: str, turns: int) -> None:
    """One `/ws` session: a few turns (one mentions the screen: a tool `yes`) and a barge-in."""
    url = origin.replace("http://", "ws://") + "/ws"
    async with websockets.connect(url, additional_headers={"X-API-Key": SECRET}) as ws:

        async def send(kind: str, rid: str, **payload: Any) -> None:
            await ws.send(json.dumps({"type": kind, "session_id": "s", "request_id": rid, "payload": payload}))

        async def until_terminal(rid: str) -> None:
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("request_id") == rid and frame["type"] in ("done", "cancelled", "error"):
                    return

        await send("start", "r0", chat_prompt="You are brief.")
        for index in range(turns):
            text = "what is on my screen?" if index == 1 else f"tell me something, number {index}"
            await send("message", f"r{index + 1}", user_utterance=text)
            await until_terminal(f"r{index + 1}")
        await send("message", "long", user_utterance="a long story please", sampling={"max_tokens": 120})
        await asyncio.sleep(0.3)
        await send("cancel", "long")  # barge-in: the dashboard times cancel until the slot is free
        await until_terminal("long")


async def scripted_load(origin: str) -> None:
    async with httpx.AsyncClient(base_url=origin, timeout=60) as http:
        await asyncio.wait_for(asyncio.gather(*(ws_turns(origin, 4) for _ in range(3))), 120)
        answers = await asyncio.gather(*(post(http, max_tokens=8) for _ in range(20)))  # rpm 30: some refused
        assert sorted({a.status_code for a in answers}) == [200, 429]
        await http.get("/nowhere")


async def test_the_dashboard_shows_every_panel_offline(tmp_path: Path) -> None:
    engine = RecordingFake(seed=1, tokens_per_s=40)
    settings = server_settings(keys_file=keys_file(tmp_path, rpm=30), deploy_mode="both", max_concurrent_connections=16)
    app = create_app(settings, engines={"chat": engine, "tool": StubClassifier()})
    async with serve_on_loopback(app) as port:
        origin = f"http://127.0.0.1:{port}"
        await scripted_load(origin)
        async with headless_page() as page:
            await page.call("Page.navigate", url=f"{origin}/dashboard?api_key={KEY}")
            deadline = time.monotonic() + 60
            state: dict[str, Any] = {}
            while time.monotonic() < deadline:
                await scripted_load_tick(origin)
                state = await page.evaluate(PANEL_STATE) or {}
                if state.get("loaded") and all(state["panels"].get(name) for name in PANELS) and state["charts"] >= 5:
                    break
                await asyncio.sleep(1)
            await page.screenshot(ARTIFACTS / "dashboard.png")
            requests = list(page.requests)
            console = list(page.console)
    assert state.get("loaded"), f"the page never loaded its stats: {state} {console}"
    empty = [name for name in PANELS if not state["panels"].get(name)]
    assert not empty, f"panels without data: {empty}"
    assert state["charts"] >= 5, "the charts have fewer than two points each"
    assert "api_key" not in state["href"] and state["stored"]  # the key moved into sessionStorage
    assert requests and all(url.startswith(origin) for url in requests), requests  # no external request
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


async def scripted_load_tick(origin: str) -> None:
    """A little traffic while the page watches, so the charts move."""
    async with httpx.AsyncClient(base_url=origin, timeout=30) as http:
        await http.post(
            "/v1/chat/completions",
            json={"model": "fake", "messages": [{"role": "user", "content": "tick"}], "max_tokens": 4},
            headers={"X-API-Key": KEY},
        )


# Each panel has data when its body holds a table or tiles whose text is not only placeholders.
PANEL_STATE = """
(() => {
  const panels = {};
  for (const section of document.querySelectorAll("section[data-panel]")) {
    const body = section.querySelector(".body");
    const cells = [...body.querySelectorAll("td.n, .tile b")].map((c) => c.textContent.trim());
    panels[section.dataset.panel] = cells.some((text) => text !== "" && text !== "-" && text !== "0");
  }
  return {panels, loaded: document.body.dataset.loaded === "1", href: location.href,
          stored: !!sessionStorage.getItem("yap_key"), charts: document.querySelectorAll("svg polyline").length};
})()
"""


def test_the_page_and_its_assets_are_small_and_self_contained() -> None:
    sizes = [
        len(gzip.compress(text.encode())) for text in (dashboard_page.PAGE, dashboard_page.SCRIPT, dashboard_page.STYLE)
    ]
    assert sum(sizes) <= 100_000
    for text in (dashboard_page.PAGE, dashboard_page.SCRIPT, dashboard_page.STYLE):
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
