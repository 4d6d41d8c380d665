"""`yap bench cluster` (placeholder, filled below)."""

from __future__ import annotations

from typing import Any


def add_bench_cluster(bench_commands: Any) -> None:
    pass
