"""`yap keys add|list|revoke`: edit the key registry file (`YAP_KEYS_FILE`) a running server re-reads.

`add` prints the new secret once, alone on its last line; the file keeps only its SHA-256.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from yap_engines.settings import SettingsError
from yap_server.keys import (
    KEY_ID,
    ApiKey,
    KeyEntry,
    KeyLimits,
    hash_secret,
    new_secret,
    read_keys_file,
    write_keys_file,
)


def register(commands: Any) -> None:
    """Add `yap keys` to the `yap` command's subparsers."""
    keys = commands.add_parser("keys", help="API keys with limits: add, list, revoke (edits YAP_KEYS_FILE)")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    file_help = "the key registry file, .toml or .json (default: $YAP_KEYS_FILE)"

    add = keys_commands.add_parser("add", help="add a key; prints its secret once, on the last line")
    add.add_argument("name", help="the key's id (what metrics and the dashboard show)")
    add.add_argument("--rpm", type=int, default=0, help="requests per minute (0: unlimited)")
    add.add_argument("--tpm", type=int, default=0, help="tokens per minute: prompt + max_tokens (0: unlimited)")
    add.add_argument("--sessions", type=int, default=0, help="concurrent WebSocket sessions (0: unlimited)")
    add.add_argument("--daily-tokens", type=int, default=0, help="tokens per day (0: unlimited)")
    add.add_argument("--file", type=Path, help=file_help)
    add.set_defaults(run=_add)

    listing = keys_commands.add_parser("list", help="list the keys and their limits (never a secret)")
    listing.add_argument("--file", type=Path, help=file_help)
    listing.set_defaults(run=_list)

    revoke = keys_commands.add_parser("revoke", help="remove a key; running servers refuse it within a second")
    revoke.add_argument("name")
    revoke.add_argument("--file", type=Path, help=file_help)
    revoke.set_defaults(run=_revoke)


def _path(args: argparse.Namespace) -> Path:
    if args.file is not None:
        return Path(args.file)
    if value := os.environ.get("YAP_KEYS_FILE"):
        return Path(value)
    raise SettingsError("no key registry file: pass --file PATH or set YAP_KEYS_FILE")


def _entries(path: Path) -> list[KeyEntry]:
    try:
        return read_keys_file(path)
    except (OSError, ValueError) as exc:
        raise SettingsError(str(exc)) from None


def _add(args: argparse.Namespace) -> int:
    path = _path(args)
    entries = _entries(path)
    if not KEY_ID.match(args.name):
        raise SettingsError(f"key name {args.name!r}: use 1-64 letters, digits, '_', '.' or '-'")
    if any(entry.key.id == args.name for entry in entries):
        raise SettingsError(f"{path}: a key named {args.name!r} exists; revoke it first or pick another name")
    for flag in ("rpm", "tpm", "sessions", "daily_tokens"):
        if getattr(args, flag) < 0:
            raise SettingsError(f"--{flag.replace('_', '-')} must be >= 0 (0: unlimited)")
    limits = KeyLimits(args.rpm, args.tpm, args.sessions, args.daily_tokens)
    secret = new_secret()
    write_keys_file(path, [*entries, KeyEntry(ApiKey(args.name, limits), hash_secret(secret))])
    print(f"added key {args.name!r} to {path} ({_describe(limits)}); its secret, shown only this once:")
    print(secret)
    return 0


def _describe(limits: KeyLimits) -> str:
    parts = [f"{name}={getattr(limits, name)}" for name in ("rpm", "tpm", "sessions", "daily_tokens")]
    return ", ".join(part for part in parts if not part.endswith("=0")) or "unlimited"


def _list(args: argparse.Namespace) -> int:
    path = _path(args)
    entries = _entries(path)
    if not entries:
        print(f"{path}: no keys", file=sys.stderr)
        return 0
    width = max(len(entry.key.id) for entry in entries)
    print(f"{'id':<{width}}  {'rpm':>8}  {'tpm':>10}  {'sessions':>8}  {'daily_tokens':>12}")
    for entry in entries:
        limits = entry.key.limits
        cells = [limits.rpm, limits.tpm, limits.sessions, limits.daily_tokens]
        rpm, tpm, sessions, daily = (str(value) if value else "-" for value in cells)
        print(f"{entry.key.id:<{width}}  {rpm:>8}  {tpm:>10}  {sessions:>8}  {daily:>12}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    path = _path(args)
    entries = _entries(path)
    kept = [entry for entry in entries if entry.key.id != args.name]
    if len(kept) == len(entries):
        raise SettingsError(f"{path}: no key named {args.name!r} (see `yap keys list`)")
    write_keys_file(path, kept)
    print(f"revoked key {args.name!r} in {path}")
    return 0
