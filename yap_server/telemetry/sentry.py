"""Sentry error reports for one app, through its own `sentry_sdk.Client` (no global init).

Reports are tagged with session_id/request_id/client_id, sent at most once per error class every
`RATE_LIMIT_S`, and scrubbed by `before_send`: API keys never leave, and unless
`SENTRY_SEND_TEXT=1` neither do local variables, request bodies, breadcrumbs, nor the turn's text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import sentry_sdk
from sentry_sdk.utils import event_from_exception

from .settings import TelemetrySettings

RATE_LIMIT_S = 10.0
FILTERED = "[Filtered]"


def _replace_everywhere(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, FILTERED)
        return value
    if isinstance(value, dict):
        return {k: _replace_everywhere(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace_everywhere(v, secrets) for v in value]
    return value


def make_scrubber(api_keys: Sequence[str], send_text: bool) -> Callable[[Any, Any], Any]:
    """A `before_send` hook: removes keys (always) and user text (unless `send_text`)."""
    keys = tuple(k for k in api_keys if k)

    def scrub(event: Any, hint: Any) -> Any:
        if not send_text:
            for exception in (event.get("exception") or {}).get("values") or []:
                for stack_frame in (exception.get("stacktrace") or {}).get("frames") or []:
                    stack_frame.pop("vars", None)
            event.pop("breadcrumbs", None)
            event.pop("extra", None)
            request = event.get("request")
            if isinstance(request, dict):
                for part in ("data", "query_string", "cookies", "headers"):
                    request.pop(part, None)
        texts = () if send_text else tuple(t for t in (hint or {}).get("yap_user_text", ()) if t)
        return _replace_everywhere(event, (*keys, *sorted(texts, key=len, reverse=True)))

    return scrub


class SentryReporter:
    """Captures exceptions for one app; at most one event per exception class per `RATE_LIMIT_S`."""

    def __init__(
        self,
        settings: TelemetrySettings,
        api_keys: Sequence[str],
        transport: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert settings.sentry_dsn is not None
        self.client = sentry_sdk.Client(
            dsn=settings.sentry_dsn.get_secret_value(),
            environment=settings.sentry_environment or settings.environment,
            release=settings.sentry_release,
            sample_rate=settings.sentry_sample_rate,
            send_default_pii=False,
            include_local_variables=settings.sentry_send_text,
            default_integrations=False,
            auto_enabling_integrations=False,
            before_send=make_scrubber(api_keys, settings.sentry_send_text),
            transport=transport,
        )
        self._clock = clock
        self._last_sent: dict[str, float] = {}

    def capture(self, exc: BaseException, tags: dict[str, str], user_text: Sequence[str] = ()) -> str | None:
        """Send `exc` unless one of its class went out less than `RATE_LIMIT_S` ago; the event id or None."""
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        now = self._clock()
        last = self._last_sent.get(kind)
        if last is not None and now - last < RATE_LIMIT_S:
            return None
        self._last_sent[kind] = now
        event, hint = event_from_exception(exc, client_options=self.client.options)
        event["level"] = "error"
        event["tags"] = dict(tags)
        hint["yap_user_text"] = tuple(user_text)
        return self.client.capture_event(event, hint=hint)

    def close(self) -> None:
        self.client.close(timeout=2.0)
