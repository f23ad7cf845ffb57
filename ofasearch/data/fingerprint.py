"""What identifies a dataset's contents, for every key of a stored teacher or logit cache and for
``state.json``: a teacher trained on other images must never be taken for this data's.

A registry dataset (Fashion-MNIST, CIFAR...) is identified by its name and split settings; an
``imagefolder`` by its files as well: a digest of every image file's relative path, size and
modification time (whole seconds: a copy that keeps times, ``rsync -a``, agrees), so listing the
folder is enough and no image is read. Two roots with the same digest hold the same data: nodes
of a cluster may keep it in different places.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ofasearch.config.schema import DataSpec
from ofasearch.data.imagefolder import IMAGE_EXTENSIONS

__all__ = ["DataFingerprint", "data_fingerprint", "data_identity"]


@dataclass(frozen=True)
class DataFingerprint:
    """An image folder's contents in brief: the digest decides, the counts explain a change."""

    digest: str
    files: int
    bytes: int

    def describe(self) -> str:
        return f"{self.files} image files, {self.bytes / 1e6:.1f} MB, digest {self.digest[:12]}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_fingerprint(data: DataSpec) -> DataFingerprint | None:
    """The fingerprint of an ``imagefolder``'s files; None for a registry dataset (its name and
    split settings identify it). A root that is not a folder gives None too: reading the data
    reports it in its own words."""
    if data.dataset != "imagefolder" or data.root == "auto" or not Path(data.root).is_dir():
        return None
    root = Path(data.root)
    entries = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = Path(folder, name)
            st = path.stat()
            entries.append((path.relative_to(root).as_posix(), st.st_size, int(st.st_mtime)))
    digest = hashlib.sha256()
    for relative, size, mtime in entries:
        digest.update(f"{relative}\0{size}\0{mtime}\n".encode())
    return DataFingerprint(digest.hexdigest(), len(entries), sum(size for _, size, _ in entries))


def data_identity(data: DataSpec, fingerprint: DataFingerprint | None = None) -> dict[str, Any]:
    """What a teacher's or logit cache's key hashes of the data: the spec without its ``root``
    (where the data lives does not matter) and, for an image folder, its files' digest (what
    the folder holds does). ``fingerprint``: one already taken, to list the folder once."""
    identity = data.model_dump(exclude={"root"})
    fingerprint = fingerprint or data_fingerprint(data)
    if fingerprint is not None:
        identity["files"] = fingerprint.digest
    return identity
