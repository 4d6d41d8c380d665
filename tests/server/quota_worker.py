"""A server process for the shared-quota tests: the fake engine, a keys file and a Redis for the counters.

`python -m tests.server.quota_worker PORT KEYS_FILE REDIS_URL FAILURE_MODE` serves until terminated."""

from __future__ import annotations

import sys
from pathlib import Path

from yap_engines import FakeEngine
from yap_server.app import create_app
from yap_server.serving import uvicorn_server
from yap_server.settings import ServerSettings


def main(port: int, keys_file: str, redis_url: str, failure: str) -> None:
    settings = ServerSettings(
        keys_file=Path(keys_file),
        limits_redis_url=redis_url,
        limits_redis_failure=failure,
        max_concurrent_connections=256,
        deploy_mode="chat",
    )
    app = create_app(settings, engines={"chat": FakeEngine(seed=1)})
    uvicorn_server(app, host="127.0.0.1", port=port).run()  # as `yap serve` runs it


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
