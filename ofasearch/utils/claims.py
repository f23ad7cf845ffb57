"""Claiming a name on disk atomically, so two processes started at the same moment never both
think they own it (a check followed by a write is a race; ``O_EXCL`` is not)."""

from __future__ import annotations

import os

from ofasearch.utils.storage import Location, ObjectPath

__all__ = ["create_exclusive"]


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
