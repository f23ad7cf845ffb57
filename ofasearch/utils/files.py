"""Files a crash must never leave half-written, and content hashes that name cached artefacts."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "cache_root", "content_hash", "file_digest"]


def atomic_write(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename, so a
    reader (or a crash) sees the old file or the new one, never a part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)
    return path


def content_hash(payload: Any, length: int = 20) -> str:
    """A short, stable name for everything that decides an artefact (JSON with sorted keys)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (weights files can be large)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cache_root() -> Path:
    """``$OFASEARCH_CACHE``, else ``~/.cache/ofasearch``: teachers, logit caches, the model catalog."""
    return Path(os.environ.get("OFASEARCH_CACHE") or Path.home() / ".cache" / "ofasearch")
