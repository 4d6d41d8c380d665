"""The Starlette application factory. The lifespan builds the `AppState` (engines included) and closes it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from yap_engines import EngineSettings
from yap_engines.protocol import ReportsDtype
from yap_engines.replicas import ReplicatedEngine
from yap_engines.tool import ToolSettings

from . import dashboard, docs, embeddings
from .auth import authenticate, unauthorized
from .completions.route import completions_endpoint
from .keys import KeyRegistry
from .limits import LiveConnections
from .openai import routes as openai_routes
from .responses.route import responses_endpoint
from .security import redact_keys_in_server_logs, security_middleware
from .seed_settings import SeedSettings
from .settings import ServerSettings
from .state import AppState, banned_phrase_bias, base_sampling, cache_reset_task, load_parts
from .telemetry import Telemetry, TelemetrySettings, configure_logging
from .telemetry.routes import RouteCounter
from .ws import ws_endpoint

__all__ = ["banned_phrase_bias", "base_sampling", "create_app"]


def create_app(
    settings: ServerSettings | None = None,
    engines: Mapping[str, Any] | None = None,
    engine_settings: EngineSettings | None = None,
    tool_settings: ToolSettings | None = None,
    telemetry: Telemetry | None = None,
) -> Starlette:
    """Build the Yap server.

    `engines` maps a part name to what serves it: "chat" (an `InferenceEngine`) and "tool" (a
    `ToolClassifier`). When omitted, the lifespan builds the parts `DEPLOY_MODE` asks for from
    `engine_settings`/`tool_settings` (default: the environment) and closes them on shutdown.
    `engine_settings` also gives the prompt budget and output cap (`CHAT_MAX_LEN`, `CHAT_MAX_OUT`).
    Injected parts belong to the caller, who closes them. So does an injected `telemetry`; without
    one, the app builds its own from `TelemetrySettings` (the environment) and flushes it on shutdown.
    Handlers read everything from `state.app`, the `AppState` the lifespan builds.
    """
    if settings is None:
        SeedSettings.from_env()  # a seed variable Yap cannot honour stops start-up, named
        settings = ServerSettings.from_env()
    engine_config = engine_settings or EngineSettings.from_env()
    owns_telemetry = telemetry is None
    if telemetry is None:
        telemetry_settings = TelemetrySettings.from_env()
        configure_logging(telemetry_settings, settings.api_keys)
        telemetry = Telemetry.build(telemetry_settings, settings.api_keys)
    app_telemetry = telemetry
    live_connections = LiveConnections()
    keys = KeyRegistry.from_settings(settings)  # a bad YAP_KEYS_FILE stops start-up, named

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        starting = time.perf_counter()
        built = {} if engines is not None else load_parts(settings, engine_config, tool_settings)
        state: AppState | None = None
        cache_resets: asyncio.Task[None] | None = None
        history: asyncio.Task[None] | None = None
        unwatch: Callable[[], None] | None = None
        try:
            parts = dict(engines) if engines is not None else built
            owned = list(built.values())
            cache_resets = cache_reset_task(engine_config, parts.get("chat"), app_telemetry)
            state = AppState.build(settings, engine_config, parts, app_telemetry, live_connections, owned, keys)
            if isinstance(state.chat, ReplicatedEngine):  # attempts, retries, migrations on /metrics
                unwatch = app_telemetry.prom.watch_replicas(state.chat.stats)
            if settings.embed_preload:
                state.encoder.preload()
            app_telemetry.started_up(time.perf_counter() - starting)
            history = asyncio.create_task(dashboard.sample_every(state), name="yap-dashboard-history")
            yield {"app": state}
        finally:
            if history is not None:
                history.cancel()
                await asyncio.gather(history, return_exceptions=True)
            if unwatch is not None:
                unwatch()
            if cache_resets is not None:
                cache_resets.cancel()
                await asyncio.gather(cache_resets, return_exceptions=True)
            if state is not None:
                await state.aclose()
            else:
                await asyncio.gather(*(part.aclose() for part in built.values()), return_exceptions=True)
            if owns_telemetry:
                await asyncio.to_thread(app_telemetry.shutdown)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        WebSocketRoute("/ws", ws_endpoint),
        Route("/v1/chat/completions", openai_routes.chat_completions, methods=["POST"]),
        Route("/v1/completions", openai_routes.completions, methods=["POST"]),
        Route("/v1/models", openai_routes.list_models, methods=["GET"]),
        WebSocketRoute("/ws/completions", completions_endpoint),
        WebSocketRoute("/v1/responses", responses_endpoint),
        Route("/embeddings", embeddings.embeddings, methods=["POST"]),
        Route("/v1/embeddings", embeddings.embeddings, methods=["POST"]),
        Route("/health", dashboard.health, methods=["GET"]),
        Route("/dashboard", dashboard.dashboard, methods=["GET"]),
        Route("/dashboard/stats", dashboard.dashboard_stats, methods=["GET"]),
        Route("/dashboard/app.js", dashboard.dashboard_script, methods=["GET"]),
        Route("/dashboard/app.css", dashboard.dashboard_style, methods=["GET"]),
        Route("/openapi.json", docs.openapi_json, methods=["GET"]),
        Route("/docs", docs.docs, methods=["GET"]),
    ]
    redact_keys_in_server_logs(settings.api_keys)
    paths = [route.path for route in routes if isinstance(route, (Route, WebSocketRoute))]
    counting = Middleware(RouteCounter, telemetry=app_telemetry, paths=paths)
    middleware = [counting, *security_middleware(settings)]
    return YapApp(live_connections, settings, routes=routes, middleware=middleware, lifespan=lifespan)


class YapApp(Starlette):
    """The Starlette app `create_app` builds, with the live connections the server drains on shutdown and
    the settings it was built with (the server reads its WebSocket options there)."""

    def __init__(self, live_connections: LiveConnections, settings: ServerSettings, **options: Any) -> None:
        super().__init__(**options)
        self.live_connections = live_connections
        self.settings = settings


async def healthz(request: Request) -> JSONResponse:
    """200 `{"status": "ok"}` when every deployed part is healthy; 503 naming the failing parts otherwise."""
    state: AppState = request.state.app
    failing = {part: health.detail for part, health in (await state.health()).items() if not health.ok}
    if failing:
        return JSONResponse({"status": "unavailable", "failing": failing}, status_code=503)
    return JSONResponse({"status": "ok"})


async def status(request: Request) -> JSONResponse:
    """Capacity and what is deployed (API key required)."""
    state: AppState = request.state.app
    if authenticate(request) is None:
        return unauthorized()
    parts = state.parts
    return JSONResponse(
        {
            "active_connections": state.slots.active,
            "max_connections": state.slots.capacity,
            "active_generations": state.telemetry.active_generations,
            "deploy_mode": state.settings.deploy_mode,
            "engines": {name: part.name for name, part in parts.items()},
            "models": {name: part.model_id for name, part in parts.items()},
            "embeddings_loaded": state.encoder.loaded,
            "dtype": {
                name: part.dtype_choice.as_dict() for name, part in parts.items() if isinstance(part, ReportsDtype)
            },
            **({"replicas": state.chat.stats()} if isinstance(state.chat, ReplicatedEngine) else {}),
        }
    )


async def metrics(request: Request) -> Response:
    """`GET /metrics`: Prometheus text (API key required unless `METRICS_PUBLIC=1`)."""
    state: AppState = request.state.app
    return state.telemetry.metrics_response(request)
