"""Files a crash must never leave half-written, content hashes that name cached artefacts, and the
checks that let a cache entry be trusted (size + SHA-256 recorded at build time)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ofasearch.errors import FileFault
from ofasearch.utils.storage import Location, ObjectPath

__all__ = [
    "allocate",
    "building_dir",
    "CorruptFileError",
    "atomic_write",
    "cache_root",
    "cached_file_digest",
    "content_hash",
    "current_umask",
    "file_digest",
    "file_problem",
    "file_record",
    "private_dir",
    "private_dir_problem",
    "replace_dir",
    "share_as_umask_allows",
    "user_temp_dir",
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
    reader (or a crash) sees the old file or the new one, never a part of it. The temporary file
    is fsynced before the rename and the folder after it: a power loss otherwise may leave the
    new name pointing at an empty file. On an object store (:class:`ObjectPath`) one PUT gives
    the same: an object is replaced whole."""
    if isinstance(path, ObjectPath):
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # e.g. no space left: no half-written temporary file stays behind
        if isinstance(exc, OSError) and exc.errno is not None:  # name the file being written, not the temporary
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
        raise
    return path


# a folder some file systems cannot fsync (or open for reading): the rename is all they give
_NO_DIR_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES, errno.EPERM}


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (its entry is in the folder, not in the file)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        if exc.errno in _NO_DIR_FSYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def private_dir_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a folder only this user can use (None: it is). Read with ``lstat``: a
    symbolic link is refused, not followed."""
    st = os.lstat(folder)
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link, not a folder"
    if not stat.S_ISDIR(st.st_mode):
        return "not a folder"
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    if st.st_mode & 0o077:
        return f"mode {stat.S_IMODE(st.st_mode):04o}, open to other users (must be 0700)"
    return None


def private_dir(folder: Path) -> Path:
    """``folder``, created with mode 0700 when missing. In a shared temp dir another user can
    create it first and plant what ofasearch trusts there, so an existing one must be a real
    folder of this user's with mode 0700, else a FileFault naming it."""
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    problem = private_dir_problem(folder)
    if problem is not None:
        raise FileFault(
            [
                f"{folder}: {problem}; ofasearch keeps its private files only in a folder of this user's with mode "
                "0700: remove it (or fix it with chown/chmod 700), then run the command again"
            ]
        )
    return folder


def user_temp_dir() -> Path:
    """``$TMPDIR/ofasearch-<uid>``: this user's private folder on this host (:func:`private_dir`)
    for Ray's records and error logs."""
    return private_dir(Path(tempfile.gettempdir()) / f"ofasearch-{os.getuid()}")


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


def allocate(path: Path, size: int) -> None:
    """Create ``path`` with ``size`` bytes reserved on its disk. A file memory-mapped for writing
    must be: writing into a sparse one on a full disk kills the process with SIGBUS, where this
    raises the ``OSError`` (ENOSPC, naming the file) that is reported in one line."""
    with open(path, "wb") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError as exc:
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from None


@contextlib.contextmanager
def building_dir(folder: Path) -> Iterator[Path]:
    """A private temporary folder beside ``folder`` to build an entry in; it replaces ``folder``
    when the block ends (:func:`replace_dir`) and is removed when the block fails (a full disk,
    Ctrl-C), so failed builds leave nothing behind. Call it under the entry's lock: temporary
    folders of earlier builders (killed, so never removed) are deleted first."""
    for stale in folder.parent.glob(f"{folder.name}.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, folder)


def cache_root() -> Path:
    """``$OFASEARCH_CACHE``, else ``~/.cache/ofasearch``: teachers, logit caches, the model catalog."""
    return Path(os.environ.get("OFASEARCH_CACHE") or Path.home() / ".cache" / "ofasearch")
