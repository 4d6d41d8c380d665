"""`build_metadata.json`: what was built, from what, with which tools, how, how long, and the file hashes.

Written from what the runner reports it actually did (calibration samples used, recipe applied,
device), not from what was asked.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .plan import QuantPlan

METADATA_FILE = "build_metadata.json"
LOG_FILE = "build.log"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class BuildMetadata(BaseModel):
    """The record of one build. `files` maps relative paths to sha256 (this file and the log excluded)."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    schema_version: int = 1
    key: str
    model: str
    revision: str
    plan: QuantPlan
    sm: int | None
    gpu: str | None
    device: str
    versions: dict[str, str]
    calibration: dict[str, Any] | None
    recipe: list[str]
    recipe_yaml: str | None = None
    durations: dict[str, float]
    files: dict[str, str]
    runner: dict[str, Any]
    trtllm_checkpoint: dict[str, Any] | None = None
    legacy_engine: dict[str, Any] | None = None
    notes: list[str] = Field(default_factory=list)
    quality: dict[str, Any] | None = None  # the latest `yap quant eval` report (quant.evaluate.QualityReport)
    created_at: str = Field(default_factory=utc_now)

    def write(self, directory: Path) -> Path:
        path = Path(directory) / METADATA_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> BuildMetadata:
        return cls.model_validate_json((Path(directory) / METADATA_FILE).read_text())
