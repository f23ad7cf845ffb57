"""The teacher-logit cache: the frozen teacher runs once per (sample, view), never in a trial.

OFA-KD only needs the teacher's final logits. The training loop's views are replayable (the
crop, timm transforms and mixup/cutmix partner and lambda of sample i in view v are a pure
function of seed, v and i: ``ofasearch.data.pipeline``), so the logits of every (sample, view)
can be computed once, stored as a float16 memory-mapped array of shape (N, V, classes) keyed by
teacher weights + data + augmentation + V, and read by every trial and run (epoch e uses view
e mod V). By default V = epochs: a cached run sees exactly the images and logits a live run
would. Building takes a file lock: concurrent builders wait, none repeat it.

Nothing is trusted because it exists: ``meta.json`` records the size and SHA-256 of ``logits.f16``
and every process checks them before it maps the file (a truncated file would fail to map, random
bytes would make every trial diverge, finite garbage would silently give wrong results). A damaged
entry is rebuilt. Reading a valid entry needs no write access, so a shared cache may be read-only.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from torch import nn

from ofasearch.config import AugmentSpec
from ofasearch.data import Pipeline, Splits
from ofasearch.models import normalization
from ofasearch.utils.files import (
    CorruptFileError,
    allocate,
    atomic_write,
    building_dir,
    cached_file_digest,
    content_hash,
    file_problem,
    file_record,
)

__all__ = ["LogitCache", "cache_key", "cache_views", "open_or_build"]

logger = logging.getLogger(__name__)

LOGITS_FILE = "logits.f16"


def cache_views(epochs: int, views: int | None) -> int:
    """Views to cache: the configured number, else one per epoch, so that a cached run sees
    exactly the images and logits a live run would (fewer views than epochs: epoch e reuses view
    e mod V, and the run says so)."""
    chosen = int(views) if views else max(1, int(epochs))
    if chosen < epochs:
        logger.warning(
            f"teacher-logit cache: distill.cache_views {chosen} < {epochs} epochs: epoch e reuses view e mod "
            f"{chosen}, so the run sees {chosen} distinct augmentations of each image where a live teacher "
            f"would see {epochs} (leave cache_views unset for exact replay)"
        )
    return chosen


@dataclass(frozen=True)
class LogitCache:
    """A built cache: ``logits.f16`` (N, V, C) float16 plus this description in ``meta.json``.

    ``sha256`` is the digest the driver verified; workers that receive this object check the file
    against it before mapping it (None, from an older state file: the size alone is checked)."""

    folder: str
    num_samples: int
    views: int
    num_classes: int
    teacher_features: int
    build_seconds: float
    sha256: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.folder) / LOGITS_FILE

    @property
    def expected_bytes(self) -> int:
        return self.num_samples * self.views * self.num_classes * 2

    def verify(self) -> None:
        """Raise ``CorruptFileError`` when ``logits.f16`` is not the file that was built (hashed once
        per process), so a damaged cache fails one trial with its name instead of training on it."""
        problem = file_problem(self.path, {"size": self.expected_bytes, "sha256": self.sha256})
        if problem:
            raise CorruptFileError(self.path, problem, "run again: the driver rebuilds a damaged logit cache")

    def _array(self) -> np.memmap:
        cached = getattr(self, "_mm", None)
        if cached is None:
            self.verify()
            shape = (self.num_samples, self.views, self.num_classes)
            cached = np.memmap(self.path, dtype=np.float16, mode="r", shape=shape)
            object.__setattr__(self, "_mm", cached)
        return cached

    def lookup(self, index: torch.Tensor, epoch: int) -> torch.Tensor:
        """float32 logits of samples ``index`` in the view that epoch ``epoch`` uses."""
        rows = self._array()[index.cpu().numpy(), epoch % self.views]
        return torch.from_numpy(np.asarray(rows, dtype=np.float32))

    def read_all(self) -> np.ndarray:
        """The whole cache (N, V, C) float16 in memory, verified like :meth:`lookup`'s map."""
        return np.array(self._array())

    def size_bytes(self) -> int:
        return self.path.stat().st_size


def cache_key(
    teacher_checkpoint: str | None,
    teacher_name: str,
    data: dict,
    seed: int,
    views: int,
    augment: dict | None = None,
    mean_std: tuple | None = None,
) -> str:
    """Hash of everything that decides the cached values: teacher weights (file content digest),
    data spec, augmentation settings and seed, the teacher's input normalisation and the number
    of views."""
    digest = cached_file_digest(teacher_checkpoint) if teacher_checkpoint else "pretrained"
    payload = {"teacher": teacher_name, "weights": digest, "data": data, "seed": seed, "views": views}
    # "v" versions the augmentation functions: changing them changes every cached value
    payload.update({"augment": augment or {}, "norm": [list(m) for m in mean_std or ()], "v": 3})
    return content_hash(payload)


@torch.no_grad()
def _build(
    teacher: nn.Module,
    splits: Splits,
    pipeline: Pipeline,
    mean_std: tuple[tuple[float, ...], tuple[float, ...]],
    seed: int,
    views: int,
    out: Path,
    *,
    device: torch.device,
    batch_size: int,
    progress: bool,
) -> None:
    n, classes = len(splits.train), splits.num_classes
    mean, std = mean_std
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    teacher = teacher.to(device).eval()
    allocate(out, n * views * classes * np.dtype(np.float16).itemsize)
    array = np.memmap(out, dtype=np.float16, mode="r+", shape=(n, views, classes))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n * views, unit="img", desc="teacher-logit cache", dynamic_ncols=True)
    for view in range(views):
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n))
            x = pipeline.train_batch(splits.train, idx, seed=seed, view=view, device=device)[0]
            array[start : start + len(idx), view] = teacher((x - mean_t) / std_t).float().cpu().numpy()
            if bar is not None:
                bar.update(len(idx))
    array.flush()
    if bar is not None:
        bar.close()


def open_or_build(
    teacher: nn.Module,
    splits: Splits,
    folder: Path,
    *,
    seed: int,
    views: int,
    pipeline: Pipeline | None = None,
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    device: torch.device | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> LogitCache:
    """Return the verified cache in ``folder``, building it first (under a lock, taken only when
    something must be built) when it is missing or damaged. ``pipeline`` makes the views exactly
    as the training loop does (default: ofasearch's pad-crop + flip); ``mean_std`` is the
    teacher's input normalisation in the distiller (default: its own timm mean/std)."""
    shape = (len(splits.train), views, splits.num_classes)
    cache = _open_verified(folder, shape, warn=True)
    if cache is not None:
        return cache
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.parent / f"{folder.name}.lock"):  # concurrent builders wait for the first
        cache = _open_verified(folder, shape, warn=False)  # built or repaired while we waited?
        if cache is not None:
            return cache
        logger.info(f"building the teacher-logit cache: {len(splits.train)} images x {views} views -> {folder}")
        start = time.perf_counter()
        if mean_std is None:
            mean, std = normalization(teacher, splits.in_chans)
            mean_std = (tuple(mean), tuple(std))
        with building_dir(folder) as tmp:
            _build(
                teacher,
                splits,
                pipeline or Pipeline(AugmentSpec(), splits),
                mean_std,
                seed,
                views,
                tmp / LOGITS_FILE,
                device=device or torch.device("cpu"),
                batch_size=batch_size,
                progress=progress,
            )
            seconds = time.perf_counter() - start
            record = file_record(tmp / LOGITS_FILE)
            cache = LogitCache(
                str(folder),
                *shape,
                int(getattr(teacher, "num_features", 0) or 0),
                seconds,
                record["sha256"],
            )
            atomic_write(tmp / "meta.json", _meta_text(cache, record))
        logger.info(f"teacher-logit cache built in {seconds:.1f}s ({cache.size_bytes() / 1e6:.1f} MB)")
        return cache


def _meta_text(cache: LogitCache, record: dict[str, Any]) -> str:
    meta = {k: v for k, v in asdict(cache).items() if k != "folder"}
    return json.dumps({**meta, "files": {LOGITS_FILE: record}}, indent=2)


def _open_verified(folder: Path, shape: tuple[int, int, int], *, warn: bool) -> LogitCache | None:
    """The cache in ``folder`` when it is complete and its file matches meta.json; None when there
    is none or it is damaged (then one warning naming the file, when ``warn``)."""
    meta_path = folder / "meta.json"
    if not folder.exists():
        return None
    problem, cache = _check(folder, meta_path, shape)
    if problem is None:
        return cache
    if warn:
        logger.warning(f"teacher-logit cache {problem}; rebuilding it")
    return None


def _check(folder: Path, meta_path: Path, shape: tuple[int, int, int]) -> tuple[str | None, LogitCache | None]:
    try:
        meta = json.loads(meta_path.read_text())
        cache = LogitCache(
            **{f.name: meta[f.name] for f in fields(LogitCache) if f.name in meta and f.name != "folder"},
            folder=str(folder),
        )
    except (OSError, ValueError, TypeError) as exc:
        return f"{meta_path}: unreadable ({type(exc).__name__}: {exc})", None
    found = (cache.num_samples, cache.views, cache.num_classes)
    if found != shape:
        return f"{meta_path}: shape {found}, expected {shape}", None
    record = (meta.get("files") or {}).get(LOGITS_FILE)
    if record is None:  # written before checksums existed: check what can be checked, then record them
        problem = file_problem(cache.path, {"size": cache.expected_bytes}) or _non_finite(cache)
        if problem:
            return f"{cache.path}: {problem}", None
        record = file_record(cache.path)
        cache = LogitCache(**{**asdict(cache), "sha256": record["sha256"]})
        _upgrade(meta_path, cache, record)
        return None, cache
    problem = file_problem(cache.path, {"size": cache.expected_bytes, "sha256": record.get("sha256")})
    if problem:
        return f"{cache.path}: {problem}", None
    return None, LogitCache(**{**asdict(cache), "sha256": record["sha256"]})


def _non_finite(cache: LogitCache) -> str | None:
    """NaN/inf logits (random bytes) in a cache that has no checksum to compare against."""
    array = np.memmap(
        cache.path, dtype=np.float16, mode="r", shape=(cache.num_samples, cache.views * cache.num_classes)
    )
    for start in range(0, cache.num_samples, 4096):
        if not np.isfinite(array[start : start + 4096]).all():
            return "holds NaN/inf values (corrupt)"
    return None


def _upgrade(meta_path: Path, cache: LogitCache, record: dict[str, Any]) -> None:
    """Add the checksums to an entry written before they existed (skipped on a read-only cache)."""
    try:
        atomic_write(meta_path, _meta_text(cache, record))
    except OSError as exc:
        logger.info(f"teacher-logit cache {meta_path}: checksums not recorded ({exc.strerror})")
        return
    logger.info(f"teacher-logit cache {meta_path}: checksums recorded (written by an older ofasearch)")
