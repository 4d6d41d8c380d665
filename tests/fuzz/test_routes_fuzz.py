"""Smaller fuzzing of the other routes over a real socket: hostile JSON bodies and frames must get a
4xx answer or a documented close, never a 5xx, an ERROR log or a hang, and `/ws` keeps serving.

The routes are a registry: add a route to `HTTP_ROUTES` / `WS_ROUTES` to fuzz it. A route the app
does not mount is skipped with its name, so the registry can run ahead of the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .frames import broken_json, json_values
from .harness import KEY, MAX_MESSAGE_BYTES, FuzzServer, target_frames
from .test_ws_fuzz import control_turn

# path -> method; the body is fuzzed JSON (or not JSON at all)
HTTP_ROUTES = {
    "/v1/chat/completions": "POST",
    "/v1/completions": "POST",
    "/v1/embeddings": "POST",
    "/embeddings": "POST",
}
# path -> close codes a hostile client may see (1011 is a bug, so it is never allowed)
WS_ROUTES = {
    "/ws/completions": {1000, 1007, 1008, 1009, 1013, 4000},
    "/v1/responses": {1000, 1007, 1008, 1009, 1013, 4000},
}

DEEP = "[" * 3000 + "]" * 3000
# Under the fuzz server's frame limit, so a WebSocket route's JSON parser sees it (DEEP is refused as too
# large). Unclosed: the parser recurses before it finds the end, and hypothesis raises the recursion limit.
DEEP_FRAME = "[" * (MAX_MESSAGE_BYTES - 1)
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.just("fake"), json_values),
        "messages": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["system", "user", "assistant", "tool", "x"]), "content": json_values}
                ),
                max_size=3,
            ),
            json_values,
        ),
        "stream": json_values,
        "max_tokens": json_values,
        "temperature": json_values,
        "input": json_values,
        "response_format": json_values,
        "prompt": st.one_of(st.lists(st.integers(-2, 2**40), max_size=6), json_values),  # /v1/completions
    },
)
bodies = st.one_of(chat_like.map(json.dumps), broken_json, st.binary(max_size=256))
ws_frames = st.one_of(
    chat_like.map(lambda body: json.dumps({"type": "response.create", "request": body, **body})),
    st.fixed_dictionaries({"type": st.sampled_from(["cancel", "pong", "ping", "response.create"])}).map(json.dumps),
    broken_json,
    st.binary(max_size=64),
)


def mounted(server: FuzzServer, path: str) -> bool:
    return any(getattr(route, "path", None) == path for route in server.app.routes)


@pytest.fixture(scope="module")
def server() -> Iterator[FuzzServer]:
    with FuzzServer() as live:
        yield live


@pytest.mark.parametrize("path", sorted(HTTP_ROUTES))
def test_http_route_fuzz(server: FuzzServer, path: str) -> None:
    if not mounted(server, path):
        pytest.skip(f"{path} is not mounted yet")
    method = HTTP_ROUTES[path]
    before = len(server.errors())  # one server for the module: judge this route by its own errors
    client = httpx.Client(base_url=server.http_url, headers={"X-API-Key": KEY}, timeout=30)

    @settings(max_examples=max(target_frames() // 10, 10), deadline=None, suppress_health_check=list(HealthCheck))
    @given(bodies)
    @example(DEEP)  # always tried: deep nesting makes json.loads raise RecursionError
    def run(body: str | bytes) -> None:
        response = client.request(method, path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code < 500 or response.status_code == 503, (response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert response.json(), "an error answer without a body"
        assert not server.errors()[before:], "\n".join(server.errors()[before:])

    try:
        run()
    finally:
        client.close()
    control_turn(server)


@pytest.mark.parametrize("path", sorted(WS_ROUTES))
def test_websocket_route_fuzz(server: FuzzServer, path: str) -> None:
    if not mounted(server, path):
        pytest.skip(f"{path} is not mounted yet")
    allowed = WS_ROUTES[path]
    before = len(server.errors())

    @settings(max_examples=max(target_frames() // 50, 6), deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(ws_frames, min_size=3, max_size=8))
    @example([DEEP, DEEP_FRAME])  # too large, then deep enough for RecursionError
    def run(frames: list[str | bytes]) -> None:
        with connect(f"{server.ws_url}{path}?api_key={KEY}", max_size=None, proxy=None) as ws:
            try:
                for frame in frames:
                    ws.send(frame)
                    try:  # an answer is optional here; a close must carry a documented code
                        ws.recv(timeout=0.05)
                    except TimeoutError:
                        pass
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else None
                assert code in allowed, f"{path} closed with {code}"
        assert not server.errors()[before:], "\n".join(server.errors()[before:])

    run()
    control_turn(server)
