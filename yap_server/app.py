"""The Starlette application factory. The lifespan owns the engines; handlers read them from state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from yap_engines import EngineSettings, InferenceEngine, load_engine

from .settings import ServerSettings


def create_app(
    settings: ServerSettings | None = None,
    engines: Mapping[str, InferenceEngine] | None = None,
    engine_settings: EngineSettings | None = None,
) -> Starlette:
    """Build the Yap server.

    `engines` maps a part name ("chat") to an engine; when omitted, the lifespan builds the chat
    engine from `engine_settings` (default: the environment) and closes it on shutdown. Injected
    engines are closed on shutdown too: the app owns what it serves.
    """
    settings = settings or ServerSettings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        served = dict(engines) if engines is not None else {"chat": load_engine(settings=engine_settings)}
        try:
            yield {"engines": served, "settings": settings}
        finally:
            await asyncio.gather(*(engine.aclose() for engine in served.values()), return_exceptions=True)

    return Starlette(routes=[Route("/healthz", healthz, methods=["GET"])], lifespan=lifespan)


async def healthz(request: Request) -> JSONResponse:
    """200 `{"status": "ok"}` when every engine is healthy; 503 naming the failing parts otherwise."""
    engines: dict[str, InferenceEngine] = request.state.engines
    checks = await asyncio.gather(*(engine.health() for engine in engines.values()))
    failing = {part: health.detail for part, health in zip(engines, checks, strict=False) if not health.ok}
    if failing:
        return JSONResponse({"status": "unavailable", "failing": failing}, status_code=503)
    return JSONResponse({"status": "ok"})
