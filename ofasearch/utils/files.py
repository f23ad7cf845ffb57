"""Files a crash must never leave half-written, content hashes that name cached artefacts, and the
checks that let a cache entry be trusted (size + SHA-256 recorded at build time)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ofasearch.utils.storage import Location, ObjectPath

__all__ = [
    "CorruptFileError",
    "atomic_write",
    "cache_root",
    "cached_file_digest",
    "content_hash",
    "current_umask",
    "file_digest",
    "file_problem",
    "file_record",
    "replace_dir",
    "share_as_umask_allows",
]

logger = logging.getLogger(__name__)

# SHA-256 of files this process already hashed, keyed by what changes when the file is rewritten:
# every trial of a search opens the same cache, and hashing a large one once per process is enough.
_DIGESTS: dict[tuple[int, int, int, int], str] = {}


class CorruptFileError(RuntimeError):
    """A cached file is not what was built (truncated, overwritten, missing): names it and why."""

    def __init__(self, path: str | Path, reason: str, remedy: str = ""):
        self.path, self.reason, self.remedy = str(path), reason, remedy
        super().__init__(f"{path}: {reason}" + (f"; {remedy}" if remedy else ""))

    def __reduce__(self) -> tuple[type[CorruptFileError], tuple[str, str, str]]:
        # keep the fields when Ray pickles the error
        return (type(self), (self.path, self.reason, self.remedy))


def atomic_write(path: Location, data: str | bytes) -> Location:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename, so a
    reader (or a crash) sees the old file or the new one, never a part of it. On an object store
    (:class:`ObjectPath`) one PUT gives the same: an object is replaced whole."""
    if isinstance(path, ObjectPath):
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # e.g. no space left: no half-written temporary file stays behind
        if isinstance(exc, OSError) and exc.errno is not None:  # name the file being written, not the temporary
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
        raise
    return path


def content_hash(payload: Any, length: int = 20) -> str:
    """A short, stable name for everything that decides an artefact (JSON with sorted keys)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (weights files can be large)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cached_file_digest(path: str | Path) -> str:
    """``file_digest``, remembered for this process while the file keeps its inode, size and
    modification time (a rename keeps them, a rewrite changes them)."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _DIGESTS.get(key)
    if digest is None:
        start = time.perf_counter()
        digest = _DIGESTS[key] = file_digest(path)
        seconds = time.perf_counter() - start
        logger.debug(f"hashed {path}: {st.st_size / 1e6:.1f} MB in {seconds:.3f}s")
    return digest


def file_record(path: str | Path) -> dict[str, Any]:
    """What a cache's meta.json records of one data file at build time, to check it at every open."""
    return {"size": os.path.getsize(path), "sha256": cached_file_digest(path)}


def file_problem(path: str | Path, record: Mapping[str, Any]) -> str | None:
    """Why ``path`` is not the file ``record`` describes (size first: cheap, and it catches a
    truncation before anything maps the file), or None when it is."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return "missing"
    expected = record.get("size")
    if expected is not None and size != expected:
        return f"{size} bytes, {expected} recorded when it was built (truncated or replaced)"
    digest = record.get("sha256")
    if digest and cached_file_digest(path) != digest:
        return "content differs from the SHA-256 recorded when it was built (corrupt or overwritten)"
    return None


def current_umask() -> int:
    """This process's umask, read without changing it where Linux shows it (/proc), else set and
    restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_as_umask_allows(path: str | Path) -> None:
    """Give a file the mode an ordinary ``open`` would (0666 less the umask): some writers
    (safetensors) create 0600, which hides a shared cache from the other users of a group."""
    os.chmod(path, 0o666 & ~current_umask())


def replace_dir(new: Path, folder: Path) -> None:
    """Move the finished ``new`` folder to ``folder``, replacing a damaged one: readers see the old
    entry or the new one, and a damaged entry is gone once this returns."""
    old = None
    if folder.exists():
        old = folder.with_name(f"{folder.name}.old{os.getpid()}")
        folder.rename(old)
    new.rename(folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def cache_root() -> Path:
    """``$OFASEARCH_CACHE``, else ``~/.cache/ofasearch``: teachers, logit caches, the model catalog."""
    return Path(os.environ.get("OFASEARCH_CACHE") or Path.home() / ".cache" / "ofasearch")
