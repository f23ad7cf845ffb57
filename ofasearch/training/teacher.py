"""Teachers: load a checkpoint, fetch pretrained weights, or train once and keep by content hash.

``checkpoint: auto`` trains the teacher on the configured data with its ``recipe`` through the
same training loop as every student, then stores it under a key made of model + kwargs + data +
recipe. Every later run, trial and worker finds it there; a file lock makes concurrent trials
wait for the first one instead of training the same teacher twice.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from safetensors.torch import save_model
from timm.utils import random_seed
from torch import nn

from ofasearch.config import DataSpec, DistillSpec, ModelSpec, OptimSpec
from ofasearch.data import Splits
from ofasearch.distill import OFADistiller
from ofasearch.errors import SpecError
from ofasearch.models import build_model, load_weights
from ofasearch.training.logit_cache import LogitCache, cache_key, cache_views, open_or_build
from ofasearch.training.loop import fit, pick_device
from ofasearch.utils.files import atomic_write, cache_root, content_hash

__all__ = ["TeacherInfo", "build_teacher", "prepare_logit_cache", "prepare_teacher", "teacher_key"]

logger = logging.getLogger(__name__)

RECIPE_VERSION = 2  # bump when the teacher training code changes what a key means
TEACHER_SEED = 0


@dataclass(frozen=True)
class TeacherInfo:
    """Where a teacher's weights are (None: timm pretrained) and how good it is, if known."""

    checkpoint: str | None
    val_acc: float | None = None
    test_acc: float | None = None
    train_seconds: float | None = None
    trained_now: bool = False


def teacher_key(teacher: ModelSpec, data: DataSpec) -> str:
    """Content hash of everything that decides an auto-trained teacher's weights."""
    payload = {
        "model": teacher.model,
        "kwargs": teacher.kwargs,
        "data": data.model_dump(exclude={"root"}),
        "recipe": teacher.recipe.model_dump(),
        "seed": TEACHER_SEED,
        "version": RECIPE_VERSION,
    }
    return content_hash(payload)


def build_teacher(teacher: ModelSpec, info: TeacherInfo, splits: Splits) -> nn.Module:
    """Create the teacher for this data and load its weights."""
    model = build_model(
        teacher.model,
        teacher.kwargs,
        **splits.model_args,
        pretrained=teacher.pretrained,
    )
    if info.checkpoint is not None:
        load_weights(model, info.checkpoint)
    return model.eval()


def prepare_teacher(
    teacher: ModelSpec, data: DataSpec, splits: Splits, *, gpus: float = 0.0, progress: bool = False
) -> TeacherInfo:
    """Resolve ``checkpoint``/``pretrained``; for ``auto`` train once (under a lock) or reuse."""
    if teacher.pretrained:
        build_teacher(teacher, TeacherInfo(None), splits)  # fails early and clearly when offline
        return TeacherInfo(None)
    if teacher.checkpoint not in (None, "auto"):
        if not Path(teacher.checkpoint).is_file():
            raise SpecError([f"teacher.checkpoint: {teacher.checkpoint!r}: no such file"])
        return TeacherInfo(teacher.checkpoint)
    key = teacher_key(teacher, data)
    folder = cache_root() / "teachers" / key
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.parent / f"{key}.lock"):  # a second trial waits here for the first
        if not (folder / "meta.json").is_file():
            logger.info(
                f"training teacher {teacher.label} on {data.dataset} ({teacher.recipe.epochs} epochs); "
                f"stored in {folder} for every later run"
            )
            _train_teacher(teacher, splits, folder, gpus=gpus, progress=progress)
            trained_now = True
        else:
            trained_now = False
    meta = json.loads((folder / "meta.json").read_text())
    info = TeacherInfo(
        str(folder / "teacher.safetensors"), meta["val_acc"], meta["test_acc"], meta["train_seconds"], trained_now
    )
    logger.info(
        f"teacher {teacher.label}: val_acc {info.val_acc:.4f} test_acc {info.test_acc:.4f}"
        + ("" if trained_now else f" (cached, {folder})")
    )
    return info


def _train_teacher(teacher: ModelSpec, splits: Splits, folder: Path, *, gpus: float, progress: bool) -> None:
    random_seed(TEACHER_SEED)
    model = build_model(
        teacher.model,
        teacher.kwargs,
        **splits.model_args,
    )
    recipe = teacher.recipe
    optim = OptimSpec(
        name=recipe.optimizer,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        batch_size=recipe.batch_size,
        epochs=recipe.epochs,
        warmup_epochs=min(1, recipe.epochs - 1),
    )
    distiller = OFADistiller(model, None, splits.num_classes, input_size=splits.input_size, method="none")
    result = fit(distiller, splits, optim, seed=TEACHER_SEED, device=pick_device(gpus), progress=progress)
    if result.diverged:
        raise RuntimeError(f"teacher {teacher.label} diverged while training; change teacher.recipe")
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    save_model(model, str(tmp / "teacher.safetensors"))
    meta = {
        "model": teacher.model,
        "kwargs": teacher.kwargs,
        "val_acc": result.best_val_acc,
        "test_acc": result.test_acc,
        "train_seconds": result.train_seconds,
        "epochs": recipe.epochs,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write(tmp / "meta.json", json.dumps(meta, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def prepare_logit_cache(
    teacher: ModelSpec,
    info: TeacherInfo,
    data: DataSpec,
    splits: Splits,
    distill: DistillSpec,
    *,
    seed: int,
    epochs: int,
    gpus: float = 0.0,
    progress: bool = False,
) -> LogitCache | None:
    """The teacher-logit cache for this teacher, data and seed (built once), or None when
    ``teacher_cache: off`` or there is no teacher to cache."""
    if distill.teacher_cache == "off" or distill.method == "none":
        return None
    # Only replayable crop/flip exists in ofasearch's pipeline, so ``auto`` always caches; a
    # non-replayable augmentation (mixup, RandAugment) would have to turn ``auto`` off here.
    views = cache_views(epochs, distill.cache_views)
    key = cache_key(info.checkpoint, teacher.label, data.model_dump(exclude={"root"}), seed, views)
    model = build_teacher(teacher, info, splits)
    return open_or_build(
        model,
        splits,
        cache_root() / "logits" / key,
        seed=seed,
        views=views,
        device=pick_device(gpus),
        progress=progress,
    )
