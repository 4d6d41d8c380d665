"""`/openapi.json` validates against the OpenAPI 3.1 schema and lists every route the app mounts;
`/docs` renders it offline."""

from __future__ import annotations

import re

import httpx
from openapi_spec_validator import validate
from starlette.routing import Route, WebSocketRoute

from yap_cli.loopback import serve_on_loopback
from yap_engines import FakeEngine
from yap_server.app import create_app

from .conftest import server_settings


async def test_the_document_is_valid_openapi_31_and_lists_every_route() -> None:
    app = create_app(server_settings(), engines={"chat": FakeEngine(seed=1)})
    async with serve_on_loopback(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        document = (await http.get("/openapi.json")).json()
        page = await http.get("/docs")
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    http_routes = [route for route in app.routes if isinstance(route, Route)]
    ws_routes = [route for route in app.routes if isinstance(route, WebSocketRoute)]
    assert http_routes and ws_routes
    for route in http_routes:
        methods = {method.lower() for method in route.methods or ()} - {"head"}
        assert route.path in document["paths"], f"{route.path} is mounted but not documented"
        assert methods <= set(document["paths"][route.path]), f"{route.path}: {methods} not all documented"
    assert set(document["paths"]) == {route.path for route in http_routes}  # nothing documented that is not mounted
    assert set(document["x-websockets"]) == {route.path for route in ws_routes}
    for route in ws_routes:
        entry = document["x-websockets"][route.path]
        assert entry["client_frames"] and entry["server_frames"] and entry["frames"].startswith("README.md#")

    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", page.text)  # nothing fetched from elsewhere
    for path in document["paths"]:
        assert f"<code>{path}</code>" in page.text
    assert "<code>/v1/responses</code>" in page.text and "rate_limit_exceeded" in page.text
