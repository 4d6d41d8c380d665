"""What a harness run leaves behind: timestamps as the seed's results spell them, and per-test artifacts
(`transcript.json`, `metrics.json`) written so that a reader never sees half a file."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def iso_z(ts: float) -> str:
    """An epoch time as ISO 8601 UTC with milliseconds and a `Z`: `2026-01-02T03:04:05.678Z`."""
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def write_json_atomic(path: Path, value: Any) -> None:
    """Write `value` as JSON to `path` by temp file + rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def write_test_artifacts(
    test_dir: Path,
    *,
    record: Mapping[str, Any],
    target: str,
    turns: Sequence[Mapping[str, Any]],
    turns_planned: int,
) -> None:
    """`transcript.json` (raw and split text of every turn, and the messages sent) and `metrics.json`
    (status, usage and timings, in total and per turn) for one test, one-shot or multi-turn."""
    test_id = record["test_id"]
    write_json_atomic(test_dir / "transcript.json", {"test_id": test_id, "target": target, "turns": list(turns)})
    write_json_atomic(
        test_dir / "metrics.json",
        {
            "test_id": test_id,
            "status": record["status"],
            "http_status": record["http_status"],
            "stop_reason": record["stop_reason"],
            "turns_run": len(turns),
            "turns_planned": turns_planned,
            "usage": record["usage"],
            "timings": record["timings"],
            "per_turn": [{k: t[k] for k in ("turn", "status", "stop_reason", "usage", "timings")} for t in turns],
        },
    )
