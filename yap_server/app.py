"""The Starlette application factory. The lifespan owns the engines; handlers read them from state."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from yap_engines import EngineSettings, InferenceEngine, Sampling, load_engine
from yap_engines.demo import DEMO_TOOL_NAME
from yap_engines.tool import ToolClassifier, ToolSettings

from . import dashboard, embeddings, openai_api
from .auth import key_is_valid, presented_key, unauthorized
from .completions_ws import completions_endpoint
from .draining import LiveConnections
from .limits import ConnectionSlots
from .observability import ObservabilitySettings, Telemetry, configure_logging
from .responses_ws import responses_endpoint
from .security import redact_keys_in_server_logs, security_middleware
from .settings import ServerSettings
from .ws import ws_endpoint


def base_sampling(settings: ServerSettings) -> Sampling:
    """The server's default sampling (from settings), capped at `CHAT_MAX_OUT`."""
    return Sampling(
        temperature=settings.chat_temperature,
        top_p=settings.chat_top_p,
        top_k=settings.chat_top_k,
        repetition_penalty=settings.chat_repetition_penalty,
        max_tokens=settings.chat_max_out,
        max_tokens_limit=settings.chat_max_out,
    )


def banned_phrase_bias(settings: ServerSettings, tokenizer: Any) -> dict[int, float]:
    """Token-level logit bias for the phrases of `CHAT_LOGIT_BIAS_FILE`: each token of each phrase, with
    and without a leading space (BPE spells a word differently after a space). A token shared by
    several phrases keeps the strongest bias."""
    bias: dict[int, float] = {}
    for phrase, value in settings.banned_phrases().items():
        for variant in (phrase, " " + phrase):
            for token_id in tokenizer.encode(variant, add_special_tokens=False):
                current = bias.get(int(token_id))
                if current is None or abs(value) > abs(current):
                    bias[int(token_id)] = value
    return bias


def build_parts(
    settings: ServerSettings, engine_settings: EngineSettings | None, tool_settings: ToolSettings | None
) -> dict[str, Any]:
    """Load what `DEPLOY_MODE` asks for: the chat engine and/or the tool classifier (default: the demo one)."""
    parts: dict[str, Any] = {}
    engine_settings = engine_settings or EngineSettings.from_env()
    if settings.chat_deployed:
        parts["chat"] = load_engine(settings=engine_settings)
    if settings.tool_deployed:
        tool_settings = tool_settings or ToolSettings.from_env()
        model = tool_settings.tool_model or str(engine_settings.engines_dir / DEMO_TOOL_NAME)
        parts["tool"] = ToolClassifier.load(model, tool_settings)
    return parts


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
    Injected parts belong to the caller, who closes them. So does an injected `telemetry`; without
    one, the app builds its own from `ObservabilitySettings` (the environment) and flushes it on shutdown.
    """
    settings = settings or ServerSettings.from_env()
    base = base_sampling(settings)
    owns_telemetry = telemetry is None
    if telemetry is None:
        observability = ObservabilitySettings.from_env()
        configure_logging(observability, settings.api_keys)
        telemetry = Telemetry.build(observability, settings.api_keys)
    app_telemetry = telemetry
    live_connections = LiveConnections()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        starting = time.perf_counter()
        built = {} if engines is not None else build_parts(settings, engine_settings, tool_settings)
        served = dict(engines) if engines is not None else built
        try:
            if settings.tool_deployed and "tool" not in served:
                raise RuntimeError(
                    f"DEPLOY_MODE={settings.deploy_mode} needs a tool classifier, which this server has not "
                    "loaded; set DEPLOY_MODE=chat"
                )
            chat = served.get("chat")
            tokenizer = getattr(chat, "tokenizer", None)
            if settings.chat_deployed and tokenizer is None:
                raise RuntimeError(
                    f"the {getattr(chat, 'name', 'chat')} engine has no tokenizer to budget prompts with; "
                    "with ENGINE=openai set YAP_OPENAI_TOKENIZER to the served model's tokenizer (HF id or path)"
                )
            sampling = base
            if tokenizer is not None and settings.chat_logit_bias_file is not None:
                sampling = base.merged({"logit_bias": banned_phrase_bias(settings, tokenizer)})
            app_telemetry.started_up(time.perf_counter() - starting)
            yield {
                "settings": settings,
                "engines": served,
                "chat_tokenizer": tokenizer,
                "base_sampling": sampling,
                "slots": ConnectionSlots(settings.max_concurrent_connections),
                "telemetry": app_telemetry,
                "live_connections": live_connections,
            }
        finally:
            await asyncio.gather(*(engine.aclose() for engine in built.values()), return_exceptions=True)
            if owns_telemetry:
                await asyncio.to_thread(app_telemetry.shutdown)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        WebSocketRoute("/ws", ws_endpoint),
        Route("/v1/chat/completions", openai_api.chat_completions, methods=["POST"]),
        Route("/v1/models", openai_api.list_models, methods=["GET"]),
        WebSocketRoute("/ws/completions", completions_endpoint),
        WebSocketRoute("/v1/responses", responses_endpoint),
        Route("/embeddings", embeddings.embeddings, methods=["POST"]),
        Route("/v1/embeddings", embeddings.embeddings, methods=["POST"]),
        Route("/health", dashboard.health, methods=["GET"]),
        Route("/dashboard", dashboard.dashboard, methods=["GET"]),
        Route("/dashboard/stats", dashboard.dashboard_stats, methods=["GET"]),
    ]
    redact_keys_in_server_logs(settings.api_keys)
    app = Starlette(routes=routes, middleware=security_middleware(settings), lifespan=lifespan)
    app.state.live_connections = live_connections  # for the server that drains it on shutdown
    return app


async def healthz(request: Request) -> JSONResponse:
    """200 `{"status": "ok"}` when every engine is healthy; 503 naming the failing parts otherwise."""
    engines: dict[str, InferenceEngine] = request.state.engines
    checks = await asyncio.gather(*(engine.health() for engine in engines.values()))
    failing = {part: health.detail for part, health in zip(engines, checks, strict=True) if not health.ok}
    if failing:
        return JSONResponse({"status": "unavailable", "failing": failing}, status_code=503)
    return JSONResponse({"status": "ok"})


async def status(request: Request) -> JSONResponse:
    """Capacity and what is deployed (API key required)."""
    settings: ServerSettings = request.state.settings
    if not key_is_valid(presented_key(request), settings.api_keys):
        return unauthorized()
    slots: ConnectionSlots = request.state.slots
    telemetry: Telemetry = request.state.telemetry
    engines: dict[str, InferenceEngine] = request.state.engines
    return JSONResponse(
        {
            "active_connections": slots.active,
            "max_connections": slots.capacity,
            "active_generations": telemetry.active_generations,
            "deploy_mode": settings.deploy_mode,
            "engines": {part: engine.name for part, engine in engines.items()},
            "models": {part: getattr(engine, "model_id", None) for part, engine in engines.items()},
        }
    )


async def metrics(request: Request) -> Response:
    """`GET /metrics`: Prometheus text (API key required unless `METRICS_PUBLIC=1`)."""
    telemetry: Telemetry = request.state.telemetry
    settings: ServerSettings = request.state.settings
    return telemetry.metrics_response(request, settings.api_keys)
