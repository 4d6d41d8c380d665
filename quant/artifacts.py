"""The artifact store: `engines/<model-slug>-<key>/`, keyed by what determines the bytes.

The key hashes the model and its revision, the plan, the calibration request, the tool versions and
the SM, so a second build with the same inputs is a cache hit and any change builds a new directory.
Builds are written to `<dir>.partial` and renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from .metadata import METADATA_FILE, BuildMetadata

_CHUNK = 1 << 20
# Files above this are fingerprinted by size plus their first and last MiB instead of read whole.
_FULL_HASH_LIMIT = 256 << 20


def slug(model: str) -> str:
    """A directory-safe short name: "Qwen/Qwen3-0.6B" -> "qwen3-0.6b", "engines/demo-chat" -> "demo-chat"."""
    name = model.rstrip("/").split("/")[-1] or "model"
    return re.sub(r"[^a-z0-9._]+", "-", name.lower()).strip("-.") or "model"


def build_key(**parts: Any) -> str:
    """A short stable hash of the given parts (canonical JSON)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def fingerprint_dir(path: Path) -> str:
    """A content fingerprint of a local model dir, used as its revision."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        size = file.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        with open(file, "rb") as handle:
            if size <= _FULL_HASH_LIMIT:
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(chunk)
            else:
                digest.update(handle.read(_CHUNK))
                handle.seek(-_CHUNK, 2)
                digest.update(handle.read(_CHUNK))
    return "local-" + digest.hexdigest()[:16]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_files(root: Path, exclude: frozenset[str] = frozenset()) -> dict[str, str]:
    """sha256 of every file under `root` (relative POSIX paths), except the names in `exclude`."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() not in exclude
    }


class ArtifactStore:
    """Build directories under `root` (default `engines/`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def dir_for(self, model: str, key: str) -> Path:
        return self.root / f"{slug(model)}-{key}"

    def cached(self, path: Path, key: str) -> BuildMetadata | None:
        """The metadata of a finished build with this key whose files are all there, else None."""
        try:
            meta = BuildMetadata.read(path)
        except (OSError, ValueError):
            return None
        if meta.key != key or not all((path / rel).is_file() for rel in meta.files):
            return None
        return meta

    def staging(self, path: Path) -> Path:
        """A fresh `<dir>.partial` to build into."""
        partial = path.with_name(path.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        return partial

    def commit(self, partial: Path, path: Path) -> Path:
        """Move a finished build into place (replacing an older one with the same name)."""
        if path.exists():
            shutil.rmtree(path)
        partial.rename(path)
        return path

    def builds(self, *, model: str | None = None, backend: str | None = None) -> list[tuple[Path, BuildMetadata]]:
        """Finished builds, newest first, optionally for one model and backend."""
        found = []
        for meta_file in self.root.glob(f"*/{METADATA_FILE}"):
            try:
                meta = BuildMetadata.read(meta_file.parent)
            except (OSError, ValueError):
                continue
            if (model is None or meta.model == model) and (backend is None or meta.plan.backend == backend):
                found.append((meta_file.parent, meta))
        return sorted(found, key=lambda item: item[1].created_at, reverse=True)
