"""Runtime faults as one line: what broke, on which path, and what to do about it.

The CLI turns an exception it did not expect from the user's input (a full disk, a read-only
folder, a damaged file, a lost Ray cluster) into one ``error:`` line and writes the traceback to
a log file, whose path the line names. Faults are recognised by type *name* and ``errno``, so this
module imports none of the libraries (Ray, safetensors, pyarrow) whose errors it describes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType

from ofasearch.errors import FileFault
from ofasearch.utils.files import user_temp_dir
from ofasearch.utils.storage import Location, ObjectPath

__all__ = [
    "FAULT_LOG_PREFIX",
    "describe_fault",
    "fault_scope",
    "note_results_folder",
    "noted_results_folder",
    "print_traceback",
    "write_fault_log",
]

FAULT_LOG_PREFIX = "ofasearch-error"

# Ray's errors that mean the cluster (or the part of it a run needed) went away.
RAY_LOST = {
    "RaySystemError",
    "ActorDiedError",
    "ActorUnavailableError",
    "NodeDiedError",
    "OwnerDiedError",
    "ObjectLostError",
    "WorkerCrashedError",
    "RaySystemExit",
    "GetTimeoutError",
}
# Errors of the readers of weights, tables, YAML/JSON and pickles: the file's bytes are damaged.
CORRUPT = {
    "SafetensorError",
    "HeaderTooLarge",
    "ArrowException",
    "ArrowInvalid",
    "YAMLError",
    "JSONDecodeError",
    "UnpicklingError",
    "BadZipFile",
}
CORRUPT_MESSAGES = ("mmap length is greater than file size", "failed finding central directory")
# Local names under which the readers on a traceback hold the file they were reading.
PATH_LOCALS = ("path", "filename", "file", "source", "checkpoint", "weights")

_results_folder: ContextVar[Location | None] = ContextVar("ofasearch_results_folder", default=None)


@contextmanager
def fault_scope() -> Iterator[None]:
    """One CLI command: the results folder noted inside it is forgotten afterwards."""
    token = _results_folder.set(None)
    try:
        yield
    finally:
        _results_folder.reset(token)


def note_results_folder(folder: Location) -> None:
    """Say which results folder the running command writes, so a fault's log goes there."""
    _results_folder.set(folder if isinstance(folder, ObjectPath) else Path(folder))


def noted_results_folder() -> Location | None:
    """The folder :func:`note_results_folder` named in this command, if any."""
    return _results_folder.get()


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it was raised from or while handling, outermost first."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
    return seen


def _type_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _path_in_traceback(tb: TracebackType | None) -> Path | None:
    """The innermost file a reader on the traceback held (``safetensors`` errors name none)."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for name in PATH_LOCALS:
            value = frame.f_locals.get(name)
            if isinstance(value, str | os.PathLike):
                try:
                    if Path(value).is_file():
                        return Path(value)
                except (OSError, ValueError):
                    continue
    return None


def _fault_path(exc: BaseException) -> Path | None:
    if isinstance(exc, OSError) and exc.filename is not None:
        return Path(os.fsdecode(exc.filename))
    return _path_in_traceback(exc.__traceback__)


def describe_fault(exc: BaseException, *, then: str = "run the command again") -> str | None:
    """One line (without ``error:``) naming the fault, its path and the remedy, ending in
    ``then`` (what to do once it is fixed); None for a fault of no kind known here."""
    chain = _chain(exc)
    for e in chain:
        names = _type_names(e)
        from_ray = type(e).__module__.startswith("ray") or isinstance(e, ConnectionError | TimeoutError | RuntimeError)
        gcs = from_ray and "gcs" in str(e).lower()  # "Failed to connect to GCS": the head node is gone
        if names & RAY_LOST or gcs:
            return (
                f"lost the Ray cluster ({type(e).__name__}: {_first_line(e)}); check it with `ray status` "
                f"(start it again if it is gone), then {then}"
            )
    for e in chain:
        if not isinstance(e, OSError):
            continue
        where = _fault_path(e)
        path = str(where) if where else "(path unknown)"
        if e.errno == errno.ENOSPC:
            return (
                f"no space left on the device of {path}: free some space, or point --storage, --output or "
                f"$OFASEARCH_CACHE at a larger disk, then {then}"
            )
        if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            what = "read-only file system" if e.errno == errno.EROFS else "permission denied"
            return (
                f"{what}: {path}: make it writable for this user, or choose another --storage, --output or "
                f"$OFASEARCH_CACHE, then {then}"
            )
        if isinstance(e, FileNotFoundError):
            return f"no such file or folder: {path}: it was moved or deleted; restore it, then {then}"
        if isinstance(e, FileExistsError | NotADirectoryError | IsADirectoryError):
            return f"{path}: {e.strerror or _first_line(e)}: move it out of the way or choose another path, then {then}"
    for e in chain:
        message = str(e)
        if _type_names(e) & CORRUPT or any(m in message for m in CORRUPT_MESSAGES):
            where = _fault_path(e)
            path = str(where) if where else "a file it read"
            return (
                f"damaged file: {path} ({type(e).__name__}: {_first_line(e)}); delete it (cached teachers and "
                f"logit caches are then rebuilt) or restore it from a copy, then {then}"
            )
    return None


def write_fault_log(exc: BaseException, argv: Sequence[str], folder: Location | None = None) -> Path | None:
    """Write the traceback of ``exc`` to ``folder/ofasearch-error-<time>.log`` (when that folder
    exists and is writable), else to ``$TMPDIR/ofasearch-<uid>/ofasearch-error-<time>.log`` (a
    folder of mode 0700: a shared temp dir is readable by all); None when neither can be written.
    The log is mode 0600 wherever it is: a traceback shows arguments and local paths."""
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    header = f"ofasearch {' '.join(argv)}\n{time.strftime('%Y-%m-%d %H:%M:%S')}\n\n"
    text = header + "".join(traceback.format_exception(exc))
    # a folder on an object store is no place for a log a person opens with an editor
    places: list[Path | Callable[[], Path]] = [folder] if isinstance(folder, Path) and folder.is_dir() else []
    for place in [*places, user_temp_dir]:
        try:
            path = (place if isinstance(place, Path) else place()) / f"{FAULT_LOG_PREFIX}-{stamp}.log"
        except (OSError, FileFault):  # the private folder is missing and cannot be made, or is not private
            continue
        try:
            _write_private(path, text)
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)  # e.g. the disk is full: no empty log left behind
            continue
        return path
    return None


def _write_private(path: Path, text: str) -> None:
    """Create (or truncate) ``path`` with mode 0600, never through a symbolic link planted there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)  # a file that was there keeps its mode through O_CREAT
        f.write(text)


def print_traceback(exc: BaseException) -> None:
    """The full traceback on stderr (``--verbose``)."""
    traceback.print_exception(exc, file=sys.stderr)
