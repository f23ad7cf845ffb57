"""Claiming a results folder for a new search: the next free name, taken atomically (two
searches started at the same moment never share one), and the same checks without creating
anything for ``--dry-run``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ofasearch.errors import SpecError
from ofasearch.results.folder import SPEC_FILE
from ofasearch.utils.claims import create_exclusive
from ofasearch.utils.storage import Location

__all__ = ["check_claimable", "claim_folder", "fresh_folder"]

logger = logging.getLogger(__name__)


def fresh_folder(storage: Location, name: str) -> Location:
    """``storage/name``, or ``name-2``, ``name-3``... when an earlier search is there (a look
    only: :func:`claim_folder` is what takes one)."""
    folder, n = storage / name, 1
    while (folder / SPEC_FILE).exists():
        n += 1
        folder = storage / f"{name}-{n}"
    return folder


def claim_folder(storage: Location, name: str, spec_text: Callable[[str], str], *, numbered: bool) -> Location:
    """Take ``storage/name`` for a new search by creating its ``spec.yaml`` (``spec_text`` of the
    folder's name) with ``O_EXCL``: of two searches started at the same moment exactly one gets
    each name. ``numbered``: a taken name moves on to ``name-2``, ``name-3``...; otherwise it is a
    SpecError. A folder without ``spec.yaml`` (e.g. made by hand) is used as it is."""
    storage.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        folder = storage / (name if n == 1 else f"{name}-{n}")
        folder.mkdir(exist_ok=True)
        if create_exclusive(folder / SPEC_FILE, spec_text(folder.name)):
            if n > 1:
                logger.info(f"{storage / name} holds an earlier search; this one: {folder}")
            return folder
        if not numbered:
            raise _taken(folder)
        n += 1


def _taken(folder: Location) -> SpecError:
    return SpecError(
        [f"name: {folder} already holds a search; `ofasearch resume {folder}` continues it, or choose another --name"]
    )


def check_claimable(folder: Location) -> None:
    """What :func:`claim_folder` would refuse, checked without creating anything (``--dry-run``):
    a folder that already holds a search, or (on a file system) storage that cannot be created
    or written."""
    if (folder / SPEC_FILE).exists():
        raise _taken(folder)
    if not isinstance(folder, Path):
        return
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "is not a folder" if not existing.is_dir() else "is not writable"
        raise SpecError([f"storage: cannot create {folder}: {existing} {what}"])
