"""Claiming a name on disk atomically, so two processes started at the same moment never both
think they own it (a check followed by a write is a race; ``O_EXCL`` is not), and holding a
results folder for one driver at a time."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ofasearch.errors import SpecError
from ofasearch.utils.storage import Location, ObjectPath

__all__ = ["DRIVER_LOCK", "create_exclusive", "hold_folder"]

DRIVER_LOCK = ".driver.lock"  # in a results folder: who drives it now


def create_exclusive(path: Location, text: str) -> bool:
    """Create ``path`` holding ``text`` only if nothing is there; False when it already exists.
    A write that fails (disk full) removes the file again, so the name is not left claimed.

    On an object store (no ``O_EXCL`` through pyarrow) it is a look, then a PUT: two searches
    started within the same moment against one bucket could both take a name."""
    if isinstance(path, ObjectPath):
        if path.exists():
            return False
        path.write_text(text)
        return True
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return True


@contextmanager
def hold_folder(folder: Location, command: str) -> Iterator[None]:
    """Hold ``folder`` for this driver while the block runs: a second ``run``/``resume`` on it is
    a SpecError naming the holder, so two drivers never restore Tune twice, rewrite the tables
    over each other or append to one study. The lock is the kernel's (``flock``): a driver killed
    at any moment releases it with its process, so a lock is never stale. Its file records the
    holder (pid, host, ``command``, start) for that message.

    On an object store there is no lock to take: the block runs unguarded."""
    if not isinstance(folder, Path):
        yield
        return
    path = folder / DRIVER_LOCK
    # read-only, and not inherited by the processes it starts: a file held open for writing for
    # the driver's life would keep the folder's file system from being remounted read-only
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpecError(
                [f"{folder}: {_holder(path)} drives this search; wait for it to end, or stop it first"]
            ) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
        with open(path, "r+") as f:  # in place: the lock belongs to this file, a replacement would not hold it
            f.write(json.dumps(holder))
            f.truncate()
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    """Who holds a driver lock, in words (what its file says; it may be cut short mid-write)."""
    try:
        holder = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
        return f"another driver (pid {holder['pid']} on {holder['host']}, `{holder['command']}`, since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another driver"
