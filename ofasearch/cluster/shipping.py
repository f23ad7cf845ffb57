"""Teacher weights and logit caches reach every node through Ray's object store, not a shared disk.

The driver prepares teachers and logit caches under its own ``$OFASEARCH_CACHE``. A trial or a
Ray Train worker may run on a node that cannot see that folder, so the driver puts each file's
bytes in Ray's object store (:func:`ship`) and the node keeps a copy under *its* cache folder,
``<cache>/received/...`` (:func:`receive`): the first process on a node fetches it under a file
lock, every later one finds the verified copy (so a file crosses the network once per node, not
once per trial). A node that shares the driver's cache folder (the driver's own node, or an NFS
cache) reads the original. Every copy is checked against the size and SHA-256 the driver
recorded before it is used, as the driver's own caches are.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import ray
from filelock import FileLock

from ofasearch.cluster.node import node_name
from ofasearch.training.logit_cache import LogitCache
from ofasearch.training.teacher import TeacherInfo
from ofasearch.utils.files import CorruptFileError, atomic_write, cache_root, file_digest, file_problem

__all__ = [
    "RECEIVED_DIR",
    "RECEIVED_LOG",
    "ShippedFile",
    "receive",
    "receive_teacher",
    "ship",
    "shipment",
]

logger = logging.getLogger(__name__)

RECEIVED_DIR = "received"  # under a node's cache folder: the files shipped to it
RECEIVED_LOG = "received.log"  # one line per file a node fetched: "<sha256> <seconds> <bytes>"


@dataclass(frozen=True)
class ShippedFile:
    """One driver file in Ray's object store: where it was, where it goes under a node's cache
    folder, what it must hash to, and the reference to its bytes."""

    origin: str  # the path on the driver
    origin_root: str  # the driver's cache folder
    relative: str  # the path under a node's ``<cache>/received/``
    size: int
    sha256: str
    ref: Any  # ray.ObjectRef of the file's bytes

    def record(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}


def ship(path: str | os.PathLike, sha256: str | None = None, size: int | None = None) -> ShippedFile:
    """Put the driver's file ``path`` in Ray's object store (Ray must be started). ``sha256``
    and ``size`` are what was recorded when it was built (taken from the file when None), so a
    file damaged after the driver checked it fails on the node, named, instead of being used."""
    path = Path(path)
    root = cache_root()
    data = path.read_bytes()
    digest = sha256 or file_digest(path)
    try:
        relative = str(path.resolve().relative_to(root.resolve()))
    except ValueError:  # a user's checkpoint outside the cache
        relative = f"external/{digest[:16]}/{path.name}"
    return ShippedFile(str(path), str(root), relative, len(data) if size is None else size, digest, ray.put(data))


def receive(shipped: ShippedFile) -> Path:
    """A verified copy of ``shipped`` on this node: the original when this node shares the
    driver's cache folder, else ``<cache>/received/<relative>``, fetched once per node."""
    root = cache_root()
    origin = Path(shipped.origin)
    same_cache = Path(shipped.origin_root).resolve() == root.resolve()
    if (same_cache or shipped.relative.startswith("external/")) and file_problem(origin, shipped.record()) is None:
        return origin
    target = root / RECEIVED_DIR / shipped.relative
    if target.is_file() and file_problem(target, shipped.record()) is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{target.name}.lock"):  # the node's other trials wait, then reuse it
        if target.is_file() and file_problem(target, shipped.record()) is None:
            return target
        start = time.perf_counter()
        data = ray.get(shipped.ref)
        atomic_write(target, data)
        problem = file_problem(target, shipped.record())
        if problem:
            raise CorruptFileError(target, f"{problem} (copied from the driver's {origin} to {node_name()})")
        seconds = time.perf_counter() - start
        with open(root / RECEIVED_DIR / RECEIVED_LOG, "a") as log:
            log.write(f"{shipped.sha256} {seconds:.3f} {len(data)} {shipped.relative}\n")
        logger.info(f"{node_name()}: {shipped.relative} received ({len(data) / 1e6:.1f} MB in {seconds:.2f}s)")
    return target


def shipment(
    teacher: TeacherInfo | None, cache: LogitCache | None, shipped: dict[str, ShippedFile] | None = None
) -> dict[str, Any]:
    """What a trial or worker needs of a teacher: plain data plus its files in the object store,
    taken from ``shipped`` (keyed by the driver's path) or put there now."""
    shipped = shipped or {}

    def file(path: str, sha256: str | None, size: int | None = None) -> ShippedFile:
        return shipped.get(path) or ship(path, sha256, size)

    return {
        "teacher": asdict(teacher) if teacher else None,
        "cache": asdict(cache) if cache else None,
        "teacher_file": file(teacher.checkpoint, teacher.sha256) if teacher and teacher.checkpoint else None,
        "cache_file": file(str(cache.path), cache.sha256, cache.expected_bytes) if cache else None,
    }


def receive_teacher(shipment: dict[str, Any]) -> tuple[TeacherInfo | None, LogitCache | None]:
    """:func:`shipment`'s teacher and logit cache, their files copied to this node."""
    teacher = TeacherInfo(**shipment["teacher"]) if shipment["teacher"] else None
    cache = LogitCache(**shipment["cache"]) if shipment["cache"] else None
    if teacher is not None and shipment["teacher_file"] is not None:
        teacher = replace(teacher, checkpoint=str(receive(shipment["teacher_file"])))
    if cache is not None and shipment["cache_file"] is not None:
        cache = replace(cache, folder=str(receive(shipment["cache_file"]).parent))
    return teacher, cache
