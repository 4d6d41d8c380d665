"""JSON log lines (`LOG_FORMAT=json`) with ids and every API key redacted."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from .settings import TelemetrySettings


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record, with `session_id`/`request_id`/`client_id` when given as `extra`,
    and every configured API key replaced by `[redacted]`."""

    FIELDS = ("session_id", "request_id", "client_id")

    def __init__(self, api_keys: Iterable[str] = ()) -> None:
        super().__init__()
        self.api_keys = tuple(k for k in api_keys if k)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({f: getattr(record, f) for f in self.FIELDS if getattr(record, f, None) is not None})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        text = json.dumps(entry, default=str)
        for key in self.api_keys:
            text = text.replace(key, "[redacted]")
        return text


def configure_logging(settings: TelemetrySettings, api_keys: Iterable[str] = ()) -> None:
    """With `LOG_FORMAT=json`, the `yap` loggers write JSON lines to stderr (idempotent: one handler)."""
    if settings.log_format != "json":
        return
    logger = logging.getLogger("yap")
    for handler in [h for h in logger.handlers if getattr(h, "yap_json", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter(api_keys))
    handler.yap_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False
