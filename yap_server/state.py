"""The application state: every app-wide object, built once by the lifespan and closed by it.

Handlers read `request.state.app` (an `AppState`); nothing app-wide is created on first use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from yap_engines import EngineHealth, EngineSettings, InferenceEngine, Sampling, load_engine
from yap_engines.protocol import SupportsPrefixCacheReset
from yap_engines.settings import SettingsError
from yap_engines.tool import ToolClassifier, ToolSettings

from .crypto import ContentCipher
from .encoder import Encoder
from .jobs import JobBoard
from .keys import KeyRegistry
from .limits import ConnectionSlots, LiveConnections
from .quotas import Quotas
from .settings import ServerSettings
from .streaming import Classifier
from .telemetry import Telemetry
from .telemetry.series import History, StatsBody

log = logging.getLogger("yap.app")


def base_sampling(settings: ServerSettings, chat_max_out: int) -> Sampling:
    """The server's default sampling (from settings), capped at `CHAT_MAX_OUT`."""
    return Sampling(
        temperature=settings.chat_temperature,
        top_p=settings.chat_top_p,
        top_k=settings.chat_top_k,
        repetition_penalty=settings.chat_repetition_penalty,
        max_tokens=chat_max_out,
        max_tokens_limit=chat_max_out,
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


def load_parts(
    settings: ServerSettings, engine_settings: EngineSettings, tool_settings: ToolSettings | None
) -> dict[str, Any]:
    """Load what `DEPLOY_MODE` asks for: the chat engine and/or the tool classifier (default: the demo one)."""
    parts: dict[str, Any] = {}
    tool_settings = (tool_settings or ToolSettings.from_env()) if settings.tool_deployed else None
    if settings.chat_deployed and tool_settings is not None:  # one GPU, two models: the seed's 0.70/0.20 split
        engine_settings, tool_settings = engine_settings.sharing_gpu(), tool_settings.sharing_gpu()
    if settings.chat_deployed:
        parts["chat"] = load_engine(settings=engine_settings)
    if tool_settings is not None:
        parts["tool"] = ToolClassifier.load(tool_settings.resolved_model(engine_settings.engines_dir), tool_settings)
    return parts


async def reset_prefix_cache_every(interval_s: float, engine: SupportsPrefixCacheReset, telemetry: Telemetry) -> None:
    """`CACHE_RESET_INTERVAL_SECONDS`: reset `engine`'s prefix cache every `interval_s` seconds, each
    reset counted by the cache-reset metric, until cancelled. A failed reset is logged and retried next time."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            reset = await engine.reset_prefix_cache()
        except Exception:
            log.exception("prefix-cache reset failed")
            continue
        if reset:
            telemetry.cache_reset()


def cache_reset_task(engine_settings: EngineSettings, chat: Any, telemetry: Telemetry) -> asyncio.Task[None] | None:
    """The periodic prefix-cache reset `CACHE_RESET_INTERVAL_SECONDS` asks for, or None when it is 0 (off)
    or no chat engine is deployed. An engine without a prefix-cache reset stops start-up naming the variable."""
    interval = engine_settings.cache_reset_interval_s
    if not interval or chat is None:
        return None
    if not isinstance(chat, SupportsPrefixCacheReset):
        raise SettingsError(
            f"CACHE_RESET_INTERVAL_SECONDS={interval:g}: the {chat.name} engine has no "
            "prefix cache to reset (only ENGINE=vllm does); unset it or set it to 0"
        )
    return asyncio.create_task(reset_prefix_cache_every(interval, chat, telemetry), name="yap-cache-reset")


@dataclass
class AppState:
    """What every route reads. `chat` and `tool` are the parts `DEPLOY_MODE` deploys (None otherwise);
    `tokenizer` and `model_id` are the chat engine's; `sampling` is the base of every generating route,
    with the banned-phrase bias of `CHAT_LOGIT_BIAS_FILE` in it; `chat_max_len` is the prompt budget
    (`CHAT_MAX_LEN`, from `EngineSettings`); `stream_flush_s` is every generation's coalescing interval
    (`STREAM_FLUSH_MS`, from `EngineSettings`, which also gives it to the engines as `stream_interval`);
    `keys` identifies every presented API key (`auth.authenticate`) and `quotas` holds each key's counters."""

    settings: ServerSettings
    chat_max_len: int
    chat: InferenceEngine | None
    tool: Classifier | None
    sampling: Sampling
    telemetry: Telemetry
    jobs: JobBoard
    cipher: ContentCipher | None
    encoder: Encoder
    slots: ConnectionSlots
    live: LiveConnections
    keys: KeyRegistry
    quotas: Quotas
    owned: list[Any] = field(default_factory=list)
    stream_flush_s: float = 0.0
    history: History = field(default_factory=History)  # the dashboard's 10-minute series
    stats_body: StatsBody = field(default_factory=StatsBody)  # `/dashboard/stats`, encoded once per tick
    ignored_fields: set[str] = field(default_factory=set)  # unknown OpenAI fields already logged once

    def note_ignored(self, names: tuple[str, ...]) -> None:
        """Log each unknown request field the first time it is seen (then ignore it silently)."""
        new = sorted(set(names) - self.ignored_fields)
        if new:
            self.ignored_fields.update(new)
            log.warning("ignoring unknown request fields %s (logged once each), as vLLM does", ", ".join(new))

    @property
    def tokenizer(self) -> Any:
        return self.chat.tokenizer if self.chat is not None else None

    @property
    def model_id(self) -> str | None:
        return self.chat.model_id if self.chat is not None else None

    @property
    def served_models(self) -> list[str]:
        """The model ids this server answers to: `SERVED_MODEL_NAME` when set, else the chat engine's model id."""
        if self.chat is None:
            return []
        if self.settings.served_model_name:
            return [name.strip() for name in self.settings.served_model_name.split(",") if name.strip()]
        return [str(self.model_id or self.chat.name)]

    @property
    def parts(self) -> dict[str, Any]:
        """The deployed parts by name (what health checks and `/status` report)."""
        return {name: part for name, part in (("chat", self.chat), ("tool", self.tool)) if part is not None}

    @classmethod
    def build(
        cls,
        settings: ServerSettings,
        engine_settings: EngineSettings,
        parts: Mapping[str, Any],
        telemetry: Telemetry,
        live: LiveConnections,
        owned: list[Any],
        keys: KeyRegistry | None = None,
    ) -> AppState:
        """Check `parts` against `DEPLOY_MODE` and assemble the state (raise `RuntimeError` naming the fix)."""
        chat: InferenceEngine | None = parts.get("chat") if settings.chat_deployed else None
        tool: Classifier | None = parts.get("tool") if settings.tool_deployed else None
        if settings.tool_deployed and tool is None:
            raise RuntimeError(
                f"DEPLOY_MODE={settings.deploy_mode} needs a tool classifier, which this server has not "
                "loaded; set DEPLOY_MODE=chat"
            )
        if settings.chat_deployed and (chat is None or chat.tokenizer is None):
            name = chat.name if chat is not None else "chat"
            raise RuntimeError(
                f"the {name} engine has no tokenizer to budget prompts with; "
                "with ENGINE=openai set YAP_OPENAI_TOKENIZER to the served model's tokenizer (HF id or path)"
            )
        sampling = base_sampling(settings, engine_settings.chat_max_out)
        if chat is not None and settings.chat_logit_bias_file is not None:
            sampling = sampling.merged({"logit_bias": banned_phrase_bias(settings, chat.tokenizer)})
        key = settings.orch_encryption_key
        return cls(
            settings=settings,
            chat_max_len=engine_settings.chat_max_len,
            chat=chat,
            tool=tool,
            sampling=sampling,
            telemetry=telemetry,
            jobs=JobBoard(settings.orch_max_concurrent_jobs, settings.orch_max_queued_jobs),
            cipher=ContentCipher(key.get_secret_value()) if key is not None else None,
            encoder=Encoder(settings),
            slots=ConnectionSlots(settings.max_concurrent_connections),
            live=live,
            keys=keys if keys is not None else KeyRegistry.from_settings(settings),
            quotas=Quotas(settings, telemetry),
            owned=owned,
            stream_flush_s=engine_settings.stream_flush_ms / 1000,
        )

    async def health(self) -> dict[str, EngineHealth]:
        """Each deployed part's health (an exception counts as not healthy)."""
        parts = self.parts
        checks = await asyncio.gather(*(part.health() for part in parts.values()), return_exceptions=True)
        return {
            name: check if isinstance(check, EngineHealth) else EngineHealth(False, f"health check failed: {check!r}")
            for name, check in zip(parts, checks, strict=True)
        }

    async def aclose(self) -> None:
        """Release the encoder and close the parts this app built (injected ones belong to the caller)."""
        await self.encoder.aclose()
        await self.quotas.aclose()
        await asyncio.gather(*(part.aclose() for part in self.owned), return_exceptions=True)
