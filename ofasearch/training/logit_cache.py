"""The teacher-logit cache: the frozen teacher runs once per (sample, view), never in a trial.

OFA-KD only needs the teacher's final logits. The training loop's augmentation is replayable
(crop/flip of sample i in view v is a pure function of seed, v and i), so the logits of every
(sample, view) can be computed once, stored as a float16 memory-mapped array of shape
(N, V, classes) keyed by teacher weights + data + transform + V, and read by every trial and run
(epoch e uses view e mod V). Building takes a file lock: concurrent builders wait, none repeat it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch import nn

from ofasearch.data import Splits, augment
from ofasearch.models import normalization
from ofasearch.utils.files import content_hash, file_digest

__all__ = ["LogitCache", "cache_key", "cache_views", "open_or_build"]

logger = logging.getLogger(__name__)

MAX_DEFAULT_VIEWS = 32


def cache_views(epochs: int, views: int | None) -> int:
    """Views to cache: the configured number, else one per epoch (at most 32). With V >= epochs a
    cached run sees exactly the images and logits a live run would."""
    return int(views) if views else max(1, min(int(epochs), MAX_DEFAULT_VIEWS))


@dataclass(frozen=True)
class LogitCache:
    """A built cache: ``logits.f16`` (N, V, C) float16 plus this description in ``meta.json``."""

    folder: str
    num_samples: int
    views: int
    num_classes: int
    teacher_features: int
    build_seconds: float

    @property
    def path(self) -> Path:
        return Path(self.folder) / "logits.f16"

    def _array(self) -> np.memmap:
        cached = getattr(self, "_mm", None)
        if cached is None:
            shape = (self.num_samples, self.views, self.num_classes)
            cached = np.memmap(self.path, dtype=np.float16, mode="r", shape=shape)
            object.__setattr__(self, "_mm", cached)
        return cached

    def lookup(self, index: torch.Tensor, epoch: int) -> torch.Tensor:
        """float32 logits of samples ``index`` in the view that epoch ``epoch`` uses."""
        rows = self._array()[index.cpu().numpy(), epoch % self.views]
        return torch.from_numpy(np.asarray(rows, dtype=np.float32))

    def size_bytes(self) -> int:
        return self.path.stat().st_size


def cache_key(teacher_checkpoint: str | None, teacher_name: str, data: dict, seed: int, views: int) -> str:
    """Hash of everything that decides the cached values: teacher weights (file content digest),
    data spec, augmentation seed and the number of views."""
    digest = file_digest(teacher_checkpoint) if teacher_checkpoint else "pretrained"
    # "v" versions the augmentation function: changing it changes every cached value
    payload = {"teacher": teacher_name, "weights": digest, "data": data, "seed": seed, "views": views, "v": 2}
    return content_hash(payload)


@torch.no_grad()
def _build(
    teacher: nn.Module,
    splits: Splits,
    seed: int,
    views: int,
    out: Path,
    *,
    device: torch.device,
    batch_size: int,
    progress: bool,
) -> None:
    n, classes = len(splits.train), splits.num_classes
    mean, std = normalization(teacher, splits.in_chans)
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    teacher = teacher.to(device).eval()
    array = np.memmap(out, dtype=np.float16, mode="w+", shape=(n, views, classes))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n * views, unit="img", desc="teacher-logit cache", dynamic_ncols=True)
    for view in range(views):
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n))
            images = splits.train.images[idx].to(device)
            if splits.augment:
                x = augment(images, idx, seed=seed, view=view, flip=splits.flip)
            else:
                x = images.float().div_(255.0)
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
    device: torch.device | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> LogitCache:
    """Return the cache in ``folder``, building it first (under a lock) when it is not there."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "meta.json"
    with FileLock(folder.parent / f"{folder.name}.lock"):  # concurrent builders wait for the first
        if not meta_path.is_file():
            tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
            tmp.mkdir(parents=True, exist_ok=True)
            logger.info(f"building the teacher-logit cache: {len(splits.train)} images x {views} views -> {folder}")
            start = time.perf_counter()
            _build(
                teacher,
                splits,
                seed,
                views,
                tmp / "logits.f16",
                device=device or torch.device("cpu"),
                batch_size=batch_size,
                progress=progress,
            )
            cache = LogitCache(
                str(folder),
                len(splits.train),
                views,
                splits.num_classes,
                int(getattr(teacher, "num_features", 0) or 0),
                time.perf_counter() - start,
            )
            (tmp / "meta.json").write_text(json.dumps(asdict(cache), indent=2))
            tmp.rename(folder)
            logger.info(f"teacher-logit cache built in {cache.build_seconds:.1f}s ({cache.size_bytes() / 1e6:.1f} MB)")
            return cache
    meta = json.loads(meta_path.read_text())
    meta["folder"] = str(folder)
    return LogitCache(**meta)
