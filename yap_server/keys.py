"""The key registry: who a presented API key is, and that key's limits.

Two sources, one check (`KeyRegistry.identify`, used by every keyed route):

- `TEXT_API_KEY` / `ORCH_API_KEY` (comma lists): unlimited keys, named `env-1`, `env-2`, … in order;
- `YAP_KEYS_FILE`: a TOML or JSON file of keys, each with an `id`, the SHA-256 of its secret (never the
  secret) and its limits. The file is re-read when it changes (its size, modification time or inode), at most
  every `RELOAD_CHECK_S`, without a restart; a file that no longer parses keeps the last good registry
  (logged), while a bad file at start-up stops it, naming `YAP_KEYS_FILE`.

The file, in TOML (JSON: `{"keys": [{...}, ...]}` with the same fields)::

    [[keys]]
    id = "mobile-app"
    hash = "sha256:9f86d0…"
    rpm = 50               # requests per minute (0 or absent: unlimited)
    tpm = 1000             # tokens per minute: prompt + max_tokens reserved at admission, unused refunded
    sessions = 4           # concurrent WebSocket sessions
    daily_tokens = 100000  # tokens per day (same reservation rule as tpm)

A presented key is hashed once and looked up by its digest: what a lookup's timing could reveal is
about the digest, never the secret, and no secret is kept in memory beyond the environment's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from yap_engines.settings import SettingsError

log = logging.getLogger("yap.keys")

RELOAD_CHECK_S = 0.5
LIMIT_FIELDS = ("rpm", "tpm", "sessions", "daily_tokens")
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def hash_secret(secret: str) -> str:
    """The stored form of a secret: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    """A fresh secret for `yap keys add` (256 bits, URL-safe)."""
    return "yap-" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class KeyLimits:
    """A key's limits; 0 means unlimited."""

    rpm: int = 0
    tpm: int = 0
    sessions: int = 0
    daily_tokens: int = 0

    @property
    def unlimited(self) -> bool:
        return not (self.rpm or self.tpm or self.sessions or self.daily_tokens)


@dataclass(frozen=True)
class ApiKey:
    """An identified key: its id (what metrics and logs name) and its limits."""

    id: str
    limits: KeyLimits = field(default_factory=KeyLimits)


@dataclass(frozen=True)
class KeyEntry:
    """One entry of the keys file: an `ApiKey` and the stored hash of its secret."""

    key: ApiKey
    hash: str

    def to_dict(self) -> dict[str, Any]:
        limits = {name: value for name, value in asdict(self.key.limits).items() if value}
        return {"id": self.key.id, "hash": self.hash, **limits}


def parse_entries(data: Any, source: str) -> list[KeyEntry]:
    """The entries of a decoded keys file; raise `ValueError` naming the entry and field that is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("keys", []), list):
        raise ValueError(f"{source}: expected a top-level `keys` list of tables")
    entries: list[KeyEntry] = []
    seen: set[str] = set()
    for index, item in enumerate(data.get("keys", [])):
        where = f"{source}: keys[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a table with id, hash and limits")
        unknown = set(item) - {"id", "hash", *LIMIT_FIELDS}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; known: id, hash, {LIMIT_FIELDS}")
        key_id, digest = item.get("id"), item.get("hash")
        if not isinstance(key_id, str) or not KEY_ID.match(key_id):
            raise ValueError(f"{where}: id must be 1-64 letters, digits, '_', '.' or '-', got {key_id!r}")
        if key_id in seen:
            raise ValueError(f"{where}: duplicate id {key_id!r}")
        if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise ValueError(f"{where} ({key_id}): hash must be 'sha256:' and 64 lowercase hex digits")
        limits: dict[str, int] = {}
        for name in LIMIT_FIELDS:
            value = item.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where} ({key_id}): {name} must be a whole number >= 0 (0: unlimited)")
            limits[name] = value
        seen.add(key_id)
        entries.append(KeyEntry(ApiKey(key_id, KeyLimits(**limits)), digest))
    return entries


def read_keys_file(path: Path) -> list[KeyEntry]:
    """Read a keys file (`.json` as JSON, anything else as TOML); a missing file holds no keys."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}") from None
    return parse_entries(data, str(path))


def _toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(int(value))


def write_keys_file(path: Path, entries: Sequence[KeyEntry]) -> None:
    """Write `entries` atomically (a temporary file renamed over the old one), so a server re-reading
    the file never sees half of it. JSON for `.json`, TOML otherwise; readable by its owner only."""
    rows = [entry.to_dict() for entry in entries]
    if path.suffix.lower() == ".json":
        text = json.dumps({"keys": rows}, indent=2) + "\n"
    else:
        blocks = ["\n".join(["[[keys]]", *(f"{k} = {_toml_value(v)}" for k, v in row.items())]) for row in rows]
        text = "# Yap API keys: edit with `yap keys add|list|revoke`. Secrets are stored as SHA-256 only.\n\n"
        text += "\n\n".join(blocks) + ("\n" if blocks else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


class KeyRegistry:
    """Every key the server accepts: the environment's (unlimited) and the keys file's (with limits).

    `identify(secret)` is the one key check of every route; it re-reads the file when it changed."""

    def __init__(self, env_keys: Iterable[str] = (), path: Path | None = None) -> None:
        self.path = path
        self._env = {hash_secret(k): ApiKey(f"env-{i}") for i, k in enumerate(dict.fromkeys(env_keys), 1) if k}
        self._file: dict[str, ApiKey] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self.reloads = 0
        if path is not None:
            try:
                self._load(self._file_stamp())
            except (OSError, ValueError) as exc:
                raise SettingsError(f"YAP_KEYS_FILE={path}: {exc}") from None

    @classmethod
    def from_settings(cls, settings: Any) -> KeyRegistry:
        return cls(settings.api_keys, settings.keys_file)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        assert self.path is not None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _load(self, stamp: tuple[int, int, int] | None) -> None:
        assert self.path is not None
        entries = read_keys_file(self.path) if stamp is not None else []
        self._file = {entry.hash: entry.key for entry in entries}
        self._stamp = stamp
        self.reloads += 1

    def refresh(self, now: float | None = None) -> None:
        """Re-read the keys file if it changed since the last read (checked at most every `RELOAD_CHECK_S`)."""
        if self.path is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._checked < RELOAD_CHECK_S:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            self._load(stamp)
            log.info("keys file %s re-read: %d key(s)", self.path, len(self._file))
        except (OSError, ValueError) as exc:
            self._stamp = stamp  # not retried until it changes again
            log.error("keys file %s not reloaded, the previous keys stay in force: %s", self.path, exc)

    def identify(self, secret: str | None) -> ApiKey | None:
        """The key `secret` belongs to, or None when it is missing, unknown or revoked."""
        if not secret:
            return None
        self.refresh()
        digest = hash_secret(secret)
        return self._env.get(digest) or self._file.get(digest)

    @property
    def ids(self) -> list[str]:
        """Every key id, the environment's first."""
        return [key.id for key in self._env.values()] + [key.id for key in self._file.values()]
