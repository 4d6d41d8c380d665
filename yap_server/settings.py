"""Server settings, read once from the environment (then `.env`, then defaults).

Use `ServerSettings.from_env(**overrides)`; a missing or bad value raises `SettingsError` naming
the variable. `TEXT_API_KEY` (or seed 002's `ORCH_API_KEY`) and `MAX_CONCURRENT_CONNECTIONS` have no
default: they must be set.
A quota of 0 (or a window of 0) disables that rate limit. The model's budgets (`CHAT_MAX_LEN`,
`CHAT_MAX_OUT`), the streaming interval (`STREAM_FLUSH_MS`, which the engines also get as their
`stream_interval`) and `YAP_ENGINES_DIR` belong to `yap_engines.EngineSettings`, which the app reads them
from; each variable is parsed in one settings class only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from yap_engines.settings import env_names, load_settings


class ServerSettings(BaseSettings):
    """Everything the server reads from the environment; each field names its variable first."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, populate_by_name=True)

    # -- listening and auth --------------------------------------------------------------------
    host: str = Field("127.0.0.1", validation_alias=env_names("YAP_HOST", "HOST", "host"), description="interface")
    port: int = Field(8000, ge=0, le=65535, validation_alias=env_names("YAP_PORT", "PORT", "port"), description="port")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info",
        validation_alias=env_names("LOG_LEVEL", "ORCH_LOG_LEVEL", "log_level"),
        description="log level, any case (seed 002 alias: ORCH_LOG_LEVEL; LOG_LEVEL wins)",
    )
    orch_api_key: SecretStr | None = Field(  # before text_api_key: its check reads this one
        None,
        validation_alias=env_names("ORCH_API_KEY", "orch_api_key"),
        description="seed 002's orchestrator key(s): accepted like TEXT_API_KEY entries (one of the two is required)",
    )
    keys_file: Path | None = Field(  # before text_api_key: its check reads this one
        None,
        validation_alias=env_names("YAP_KEYS_FILE", "keys_file"),
        description="TOML or JSON key registry (ids, secret hashes, per-key limits), re-read on change; "
        "edit it with `yap keys`",
    )
    text_api_key: SecretStr | None = Field(
        None,
        validate_default=True,
        validation_alias=env_names("TEXT_API_KEY", "text_api_key"),
        description="API key(s) clients must present; a comma-separated list allows several",
    )
    max_concurrent_connections: int = Field(
        gt=0,
        validation_alias=env_names("MAX_CONCURRENT_CONNECTIONS", "max_concurrent_connections"),
        description="WebSocket connections served at once",
    )

    # -- deployment ----------------------------------------------------------------------------
    deploy_mode: Literal["both", "chat", "tool"] = Field(
        "both",
        validation_alias=env_names("DEPLOY_MODE", "DEPLOY_MODELS", "deploy_mode"),
        description="which parts answer turns: the chat model, the tool classifier, or both",
    )
    history_max_tokens: int = Field(
        3000,
        gt=0,
        validation_alias=env_names("HISTORY_MAX_TOKENS", "history_max_tokens"),
        description="history budget in tokens; past it, whole oldest turns are dropped",
    )
    history_trim_ratio: float = Field(
        0.7,
        gt=0,
        le=1,
        validation_alias=env_names("HISTORY_TRIM_RATIO", "history_trim_ratio"),
        description="hysteresis: when history overflows, trim it to this fraction of its budget",
    )
    screen_analysis_prefix: str = Field(
        "Here is what is on my screen: ",
        validation_alias=env_names("SCREEN_ANALYSIS_PREFIX", "screen_analysis_prefix"),
        description="prepended to a followup's analysis_text",
    )
    chat_logit_bias_file: Path | None = Field(
        None,
        validation_alias=env_names("CHAT_LOGIT_BIAS_FILE", "chat_logit_bias_file"),
        description='JSON object of banned phrases -> bias, e.g. {"As an AI": -100}',
    )
    chat_temperature: float = Field(0.7, validation_alias=env_names("CHAT_TEMPERATURE", "chat_temperature"))
    chat_top_p: float = Field(0.9, validation_alias=env_names("CHAT_TOP_P", "chat_top_p"))
    chat_top_k: int = Field(-1, validation_alias=env_names("CHAT_TOP_K", "chat_top_k"))
    chat_repetition_penalty: float = Field(
        1.05, validation_alias=env_names("CHAT_REPETITION_PENALTY", "chat_repetition_penalty")
    )

    # -- OpenAI-compatible API (/v1) -----------------------------------------------------------
    served_model_name: str | None = Field(
        None,
        validation_alias=env_names("SERVED_MODEL_NAME", "served_model_name"),
        description="model id(s) /v1 answers to, comma-separated (default: the chat engine's model id)",
    )

    # -- per-key limits and their counters (see keys.py, quotas.py) ----------------------------
    limits_redis_url: str | None = Field(
        None,
        validation_alias=env_names("YAP_LIMITS_REDIS_URL", "limits_redis_url"),
        description="redis://host:port/db shared by every worker and host for the per-key counters "
        "(default: in this process's memory)",
    )
    limits_redis_failure: Literal["open", "closed"] = Field(
        "open",
        validation_alias=env_names("YAP_LIMITS_REDIS_FAILURE", "limits_redis_failure"),
        description="when Redis cannot be reached: open admits (limits off), closed refuses keys that have limits; "
        "either way it is logged and counted",
    )
    slo_ttft_s: float = Field(
        0.5, gt=0, validation_alias=env_names("YAP_SLO_TTFT_S", "slo_ttft_s"), description="dashboard SLO: first token"
    )
    slo_itl_s: float = Field(
        0.05,
        gt=0,
        validation_alias=env_names("YAP_SLO_ITL_S", "slo_itl_s"),
        description="dashboard SLO: inter-token latency",
    )

    # -- WebSocket protocol --------------------------------------------------------------------
    ws_end_sentinel: str = Field("__END__", validation_alias=env_names("WS_END_SENTINEL", "ws_end_sentinel"))
    ws_cancel_sentinel: str = Field(
        "__CANCEL__", validation_alias=env_names("WS_CANCEL_SENTINEL", "ws_cancel_sentinel")
    )
    ws_per_message_deflate: bool = Field(
        False,
        validation_alias=env_names("WS_PER_MESSAGE_DEFLATE", "ws_per_message_deflate"),
        description="offer permessage-deflate on WebSockets; off: token frames are tens of bytes, and compressing "
        "each one costs the server more CPU than it saves on the wire (see benchmarks/README.md)",
    )
    ws_idle_timeout_s: float = Field(150.0, gt=0, validation_alias=env_names("WS_IDLE_TIMEOUT_S", "ws_idle_timeout_s"))
    ws_handshake_acquire_timeout_s: float = Field(
        0.5, ge=0, validation_alias=env_names("WS_HANDSHAKE_ACQUIRE_TIMEOUT_S", "ws_handshake_acquire_timeout_s")
    )
    ws_max_message_bytes: int = Field(
        65536, gt=0, validation_alias=env_names("WS_MAX_MESSAGE_BYTES", "ws_max_message_bytes")
    )
    ws_max_messages_per_window: int = Field(
        25, ge=0, validation_alias=env_names("WS_MAX_MESSAGES_PER_WINDOW", "ws_max_messages_per_window")
    )
    ws_message_window_seconds: float = Field(
        60.0, ge=0, validation_alias=env_names("WS_MESSAGE_WINDOW_SECONDS", "ws_message_window_seconds")
    )
    ws_max_cancels_per_window: int = Field(
        25, ge=0, validation_alias=env_names("WS_MAX_CANCELS_PER_WINDOW", "ws_max_cancels_per_window")
    )
    ws_cancel_window_seconds: float = Field(
        60.0, ge=0, validation_alias=env_names("WS_CANCEL_WINDOW_SECONDS", "ws_cancel_window_seconds")
    )
    ws_max_prefills_per_window: int = Field(
        300,
        ge=0,
        validation_alias=env_names("WS_MAX_PREFILLS_PER_WINDOW", "ws_max_prefills_per_window"),
        description="`prefill` frames (interim transcripts) per connection per window; 0 = unlimited",
    )
    ws_prefill_window_seconds: float = Field(
        60.0, ge=0, validation_alias=env_names("WS_PREFILL_WINDOW_SECONDS", "ws_prefill_window_seconds")
    )
    ws_warm_after_start: bool = Field(
        True,
        validation_alias=env_names("WS_WARM_AFTER_START", "ws_warm_after_start"),
        description="after a `start`, warm persona and history into the prefix cache for the first message",
    )
    ws_warm_after_turn: bool = Field(
        False,
        validation_alias=env_names("WS_WARM_AFTER_TURN", "ws_warm_after_turn"),
        description=(
            "after each turn, warm the history with the reply as kept (the spoken part after a barge-in); off by "
            "default: the reply's tokens are already in the prefix cache, and rendering the warm prompt costs the "
            "server CPU on every turn (64 sessions on FakeEngine: 53k against 92k tokens/s)"
        ),
    )
    chat_prompt_update_max_per_window: int = Field(
        4, ge=0, validation_alias=env_names("CHAT_PROMPT_UPDATE_MAX_PER_WINDOW", "chat_prompt_update_max_per_window")
    )
    chat_prompt_update_window_seconds: float = Field(
        60.0, ge=0, validation_alias=env_names("CHAT_PROMPT_UPDATE_WINDOW_SECONDS", "chat_prompt_update_window_seconds")
    )

    # -- reliability and security (yap_server/security.py, the /ws send deadline) -----------------
    allowed_origins: str = Field(
        "",
        validation_alias=env_names("ALLOWED_ORIGINS", "allowed_origins"),
        description="browser origins allowed cross-origin (comma-separated, * for any); same-origin always works",
    )
    auth_failure_max_per_window: int = Field(
        20,
        ge=0,
        validation_alias=env_names("AUTH_FAILURE_MAX_PER_WINDOW", "auth_failure_max_per_window"),
        description="failed authentications per client address before it is blocked (0 disables)",
    )
    auth_failure_window_seconds: float = Field(
        60.0,
        ge=0,
        validation_alias=env_names("AUTH_FAILURE_WINDOW_SECONDS", "auth_failure_window_seconds"),
        description="sliding window of the auth-failure count",
    )
    ws_send_timeout_s: float = Field(
        10.0,
        gt=0,
        validation_alias=env_names("WS_SEND_TIMEOUT_S", "ws_send_timeout_s"),
        description="a /ws client that accepts no data for this long while the server sends is dropped",
    )

    @property
    def allowed_origin_list(self) -> list[str]:
        return [origin.strip().rstrip("/") for origin in self.allowed_origins.split(",") if origin.strip()]

    # -- function calling (/v1/chat/completions and /v1/responses `tools`) ------------------------
    tool_call_parser: str = Field(
        "auto",
        validation_alias=env_names("TOOL_CALL_PARSER", "tool_call_parser"),
        description="the model's tool-call format: auto (detected from the chat template), hermes, llama3_json, "
        "mistral, or any vLLM tool parser's name (vllm:<name> for vLLM's own), where vLLM is installed",
    )

    @field_validator("tool_call_parser")
    @classmethod
    def _known_tool_call_parser(cls, value: str) -> str:
        value = value.strip()
        if value in ("auto", "hermes", "llama3_json", "mistral"):
            return value
        from yap_engines.errors import BackendUnavailableError
        from yap_engines.vllm_tool_parsers import vllm_parser_names

        try:
            names = vllm_parser_names()
        except BackendUnavailableError as exc:
            raise ValueError(f"{value!r} is not a built-in parser: {exc}") from None
        if value.removeprefix("vllm:") not in names:
            raise ValueError(
                f"{value!r} is unknown: use auto, hermes, llama3_json, mistral or one of vLLM's: {', '.join(names)}"
            )
        return value

    # -- WS /v1/responses (Responses-style WebSocket) --------------------------------------------
    responses_tool_name: str = Field(
        "take_screenshot",
        validation_alias=env_names("RESPONSES_TOOL_NAME", "responses_tool_name"),
        description="function tool a classifier 'yes' calls when the request declares it; empty = never",
    )
    responses_cache_size: int = Field(
        4,
        ge=1,
        validation_alias=env_names("RESPONSES_CACHE_SIZE", "responses_cache_size"),
        description="ended responses a connection keeps for previous_response_id",
    )
    responses_max_message_bytes: int = Field(
        1_000_000,
        gt=0,
        le=1_048_575,
        validation_alias=env_names("RESPONSES_MAX_MESSAGE_BYTES", "responses_max_message_bytes"),
        description="largest frame /v1/responses reads or sends (under 1 MiB)",
    )

    # -- /ws/completions (thinking effort + structured output), /embeddings ------------------------
    orch_max_concurrent_jobs: int = Field(
        4,
        gt=0,
        validation_alias=env_names("ORCH_MAX_CONCURRENT_JOBS", "orch_max_concurrent_jobs"),
        description="/ws/completions jobs running at once (server-wide); more wait in the queue",
    )
    orch_max_queued_jobs: int = Field(
        32,
        ge=0,
        validation_alias=env_names("ORCH_MAX_QUEUED_JOBS", "orch_max_queued_jobs"),
        description="jobs waiting for a run slot (server-wide); past it a job is refused with queue_full",
    )
    orch_max_jobs_per_connection: int = Field(
        4,
        gt=0,
        validation_alias=env_names("ORCH_MAX_JOBS_PER_CONNECTION", "orch_max_jobs_per_connection"),
        description="running plus queued jobs of one connection; past it a job is refused with too_many_jobs",
    )
    orch_default_timeout_s: float = Field(
        120.0,
        gt=0,
        validation_alias=env_names("ORCH_DEFAULT_TIMEOUT_S", "orch_default_timeout_s"),
        description="a job's timeout_seconds when the request gives none",
    )
    orch_encryption_key: SecretStr | None = Field(
        None,
        validation_alias=env_names("ORCH_ENCRYPTION_KEY", "orch_encryption_key"),
        description="Fernet key: messages[].content and result content/thinking are Fernet tokens",
    )
    orch_ping_interval_s: float = Field(
        15.0,
        gt=0,
        validation_alias=env_names("ORCH_PING_INTERVAL_S", "orch_ping_interval_s"),
        description='/ws/completions sends {"type": "ping"} this often',
    )
    orch_pong_timeout_s: float = Field(
        45.0,
        gt=0,
        validation_alias=env_names("ORCH_PONG_TIMEOUT_S", "orch_pong_timeout_s"),
        description="/ws/completions closes a connection silent (no pong, no frame) this long",
    )
    final_max_tokens: int = Field(
        2048,
        gt=0,
        validation_alias=env_names("FINAL_MAX_TOKENS", "final_max_tokens"),
        description="cap of each answer pass of a /ws/completions job (never 0)",
    )
    thinking_budget_low: int = Field(
        500,
        ge=0,
        validation_alias=env_names("THINKING_BUDGET_LOW", "thinking_budget_low"),
        description="thinking tokens per thinking pass for thinking_effort low",
    )
    thinking_budget_medium: int = Field(
        2000,
        ge=0,
        validation_alias=env_names("THINKING_BUDGET_MEDIUM", "thinking_budget_medium"),
        description="thinking tokens per thinking pass for thinking_effort medium",
    )
    thinking_budget_high: int = Field(
        16000,
        ge=0,
        validation_alias=env_names("THINKING_BUDGET_HIGH", "thinking_budget_high"),
        description="thinking tokens per thinking pass for thinking_effort high",
    )
    embed_model: str | None = Field(
        None,
        validation_alias=env_names("EMBED_MODEL", "embed_model"),
        description="embedding model (HF id or path) for POST /embeddings; unset = the packaged all-MiniLM-L6-v2",
    )
    embed_preload: bool = Field(
        True,
        validation_alias=env_names("EMBED_PRELOAD", "embed_preload"),
        description="load the embeddings encoder when the server starts, in a worker thread (readiness does not "
        "wait for it); 0 = load it on the first POST /embeddings (a server that never embeds pays nothing)",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("orch_encryption_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        from .crypto import check_fernet_key

        if value is not None:
            check_fernet_key(value.get_secret_value())
        return value

    @property
    def thinking_budgets(self) -> dict[str, int]:
        """Thinking tokens per effort (`none` is always 0)."""
        low, medium, high = self.thinking_budget_low, self.thinking_budget_medium, self.thinking_budget_high
        return {"none": 0, "low": low, "medium": medium, "high": high}

    @field_validator("limits_redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "redis+unix://")):
            raise ValueError("must be a redis:// (or rediss://, redis+unix://) URL, e.g. redis://127.0.0.1:6379/0")
        return value

    @field_validator("text_api_key", "orch_api_key")
    @classmethod
    def _keys_not_empty(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and not [k for k in value.get_secret_value().split(",") if k.strip()]:
            raise ValueError("must hold at least one non-empty key")
        if (
            value is None
            and info.field_name == "text_api_key"
            and info.data.get("orch_api_key") is None
            and info.data.get("keys_file") is None
        ):
            raise ValueError(
                "required: set it to the key(s) clients present (a seed 002 deployment may set ORCH_API_KEY "
                "instead; a key registry, YAP_KEYS_FILE, also does)"
            )
        return value

    @property
    def api_keys(self) -> tuple[str, ...]:
        """Every key a client may present, on every keyed route: `TEXT_API_KEY`'s, then `ORCH_API_KEY`'s.

        seed 002 guarded its whole orchestrator (`/ws/completions`, `/embeddings`, `/dashboard`) with
        `ORCH_API_KEY`, so its clients keep working unchanged; the key is one more entry of the list."""
        keys: list[str] = []
        for secret in (self.text_api_key, self.orch_api_key):
            if secret is not None:
                keys += [k.strip() for k in secret.get_secret_value().split(",") if k.strip()]
        return tuple(dict.fromkeys(keys))

    @property
    def chat_deployed(self) -> bool:
        return self.deploy_mode in ("both", "chat")

    @property
    def tool_deployed(self) -> bool:
        return self.deploy_mode in ("both", "tool")

    def banned_phrases(self) -> dict[str, float]:
        """The phrases of `CHAT_LOGIT_BIAS_FILE` and their bias (empty when unset)."""
        if self.chat_logit_bias_file is None:
            return {}
        data = json.loads(self.chat_logit_bias_file.read_text())
        if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
            raise ValueError(f"CHAT_LOGIT_BIAS_FILE {self.chat_logit_bias_file}: expected a JSON object phrase -> bias")
        return {str(k): float(v) for k, v in data.items()}

    @classmethod
    def from_env(cls, **overrides: Any) -> ServerSettings:
        """Read the environment (plus `overrides` by field name); raise `SettingsError` naming a bad variable."""
        return load_settings(cls, **overrides)
