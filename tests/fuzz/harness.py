"""A real Yap server on 127.0.0.1 in a background thread, with its error logs captured, for fuzzing
with synchronous clients (hypothesis drives plain functions).

`FuzzServer` runs `create_app` under uvicorn in its own event loop and records every ERROR log
record of uvicorn, Starlette, asyncio and Yap, and any exception that escapes a thread, so a test
can assert after every step that the server raised nothing unhandled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from yap_cli.loopback import serve_on_loopback
from yap_engines import EngineSettings, FakeEngine
from yap_server.app import create_app
from yap_server.settings import ServerSettings

KEY = "fuzz-key"
MAX_MESSAGE_BYTES = 4096
WATCHED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "starlette", "asyncio", "yap")
FRAMES_ENV = "YAP_FUZZ_FRAMES"
DEFAULT_FRAMES = 300


def target_frames() -> int:
    """How many generated frames a fuzz test sends: `YAP_FUZZ_FRAMES` (`make fuzz` sets 10000)."""
    return int(os.environ.get(FRAMES_ENV, DEFAULT_FRAMES))


def fuzz_settings(**overrides: Any) -> ServerSettings:
    """Server settings for fuzzing: small frame limit (cheap oversize frames), quotas off (every frame
    reaches its handler instead of `rate_limited`), a short reply cap."""
    values: dict[str, Any] = {
        "text_api_key": KEY,
        "max_concurrent_connections": 8,
        "deploy_mode": "chat",
        "ws_idle_timeout_s": 60,
        "ws_max_message_bytes": MAX_MESSAGE_BYTES,
        "ws_max_messages_per_window": 0,
        "ws_max_cancels_per_window": 0,
        "chat_prompt_update_max_per_window": 0,
        "auth_failure_max_per_window": 0,
    }
    values.update(overrides)
    return ServerSettings(**values)


# uvicorn answers a text frame that is not UTF-8 by closing 1007, as RFC 6455 asks, but logs the
# client's mistake at ERROR with a traceback; that record is the client's fault, not the server's.
CLIENT_FAULTS_LOGGED_AS_ERRORS = ("Invalid UTF-8 sequence received from client.",)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() not in CLIENT_FAULTS_LOGGED_AS_ERRORS:
            self.records.append(record)


class FuzzServer:
    """Context manager: a live server in a thread; `port`, `engine`, `errors()`, `run(coro)`."""

    def __init__(self, engine: Any | None = None, settings: ServerSettings | None = None) -> None:
        self.engine = engine if engine is not None else FakeEngine(seed=7, tokens_per_s=1000)
        self.settings = settings or fuzz_settings()
        engine_settings = EngineSettings(chat_max_out=48)  # a short reply cap
        self.app = create_app(self.settings, engines={"chat": self.engine}, engine_settings=engine_settings)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="fuzz-server", daemon=True)
        self._handler = _Collect()
        self._thread_errors: list[str] = []
        self._previous_hook = threading.excepthook
        self._http: httpx.Client | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def _main(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with serve_on_loopback(self.app) as port:
                self.port = port
                self._ready.set()
                await self._stop.wait()
        finally:
            self._ready.set()

    def __enter__(self) -> FuzzServer:
        threading.excepthook = lambda args: self._thread_errors.append(f"{args.thread}: {args.exc_value!r}")
        self._thread.start()
        if not self._ready.wait(30) or not self.port:
            raise RuntimeError("the fuzz server did not start")
        # after uvicorn has configured its loggers (its dictConfig drops handlers added before)
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).addHandler(self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        if self._http is not None:
            self._http.close()
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).removeHandler(self._handler)
        threading.excepthook = self._previous_hook

    # -- inspection ------------------------------------------------------------------------------
    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        """`GET /status` (one HTTP client for the server's life: building one per call is slow)."""
        if self._http is None:
            self._http = httpx.Client(base_url=self.http_url, headers={"X-API-Key": KEY}, timeout=10)
        return dict(self._http.get("/status").json())

    def run(self, make: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 30) -> Any:
        """Run a coroutine in the server's loop (to read engine or app state) and return its result."""
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(make(), self._loop)
        return future.result(timeout)

    def errors(self) -> list[str]:
        """Every ERROR log record and escaped thread exception so far, formatted with its traceback."""
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return [formatter.format(r) for r in self._handler.records] + list(self._thread_errors)
