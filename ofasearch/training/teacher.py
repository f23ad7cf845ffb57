"""Teachers: load a checkpoint, fetch pretrained weights, or train once and keep by content hash.

``checkpoint: auto`` trains the teacher on the configured data with its ``recipe`` through the
same training loop as every student, then stores it under a key made of model + kwargs + data +
recipe. Every later run, trial and worker finds it there; a file lock makes concurrent trials
wait for the first one instead of training the same teacher twice.

A stored teacher is trusted only while ``teacher.safetensors`` has the size and SHA-256 that
``meta.json`` recorded when it was trained (checked once per process): a damaged one is retrained
and its accuracy measured again. Reading a valid store needs no write access (the lock is taken
only to build), so a group can share a read-only store.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from timm.utils import random_seed
from torch import nn

from ofasearch.config import AugmentSpec, DataSpec, DistillSpec, ModelSpec, OptimSpec
from ofasearch.config.registry import get_method
from ofasearch.data import Pipeline, Splits, data_identity
from ofasearch.distill import OFADistiller
from ofasearch.errors import SpecError
from ofasearch.models import build_model, load_weights, normalization
from ofasearch.training.logit_cache import LogitCache, cache_key, cache_views, open_or_build
from ofasearch.training.loop import fit
from ofasearch.training.ranks import pick_device
from ofasearch.utils.files import (
    CorruptFileError,
    atomic_write,
    building_dir,
    cache_root,
    cached_file_digest,
    content_hash,
    file_problem,
    file_record,
    share_as_umask_allows,
)
from ofasearch.utils.versions import package_versions

__all__ = ["TeacherInfo", "build_teacher", "prepare_logit_cache", "prepare_teacher", "teacher_key"]

logger = logging.getLogger(__name__)

# bump when the teacher training code changes what a key means (3: the best epoch is stored, not the last)
RECIPE_VERSION = 3
TEACHER_SEED = 0
WEIGHTS_FILE = "teacher.safetensors"
# what reading a damaged checkpoint raises: safetensors, torch.load (zip or pickle), the OS
_UNREADABLE = (SafetensorError, OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError, KeyError)


@dataclass(frozen=True)
class TeacherInfo:
    """Where a teacher's weights are (None: timm pretrained) and how good it is, if known.

    ``sha256`` is the digest of an auto-trained teacher's file, verified before every load (once per
    process), so a worker never distills from a file damaged after the driver checked it."""

    checkpoint: str | None
    val_acc: float | None = None
    test_acc: float | None = None
    train_seconds: float | None = None
    trained_now: bool = False
    sha256: str | None = None


def teacher_key(teacher: ModelSpec, data: DataSpec) -> str:
    """Content hash of everything that decides an auto-trained teacher's weights."""
    payload = {
        "model": teacher.model,
        "kwargs": teacher.kwargs,
        "data": data_identity(data),  # an image folder: its files too
        "recipe": teacher.training_recipe.model_dump(),
        "seed": TEACHER_SEED,
        "version": RECIPE_VERSION,
    }
    if teacher.pretrained:  # fine-tuned from the hub's weights (a key of its own; older keys unchanged)
        payload["pretrained"] = True
    return content_hash(payload)


def build_teacher(teacher: ModelSpec, info: TeacherInfo, splits: Splits) -> nn.Module:
    """Create the teacher for this data and load its weights."""
    model = build_model(
        teacher.model,
        teacher.kwargs,
        **splits.model_args,
        pretrained=teacher.pretrained and info.checkpoint is None,  # a fine-tuned one is on disk
    )
    if info.checkpoint is not None:
        if info.sha256:
            problem = file_problem(info.checkpoint, {"sha256": info.sha256})
            if problem:
                raise CorruptFileError(info.checkpoint, problem, "run again: the teacher is retrained")
        load_weights(model, info.checkpoint)
    return model.eval()


def prepare_teacher(
    teacher: ModelSpec, data: DataSpec, splits: Splits, *, gpus: float = 0.0, progress: bool = False
) -> TeacherInfo:
    """Resolve ``checkpoint``/``pretrained``; for ``auto`` reuse a verified stored teacher, else
    train it (under a lock, so concurrent runs train it once)."""
    if teacher.pretrained and not teacher.fine_tunes:
        build_teacher(teacher, TeacherInfo(None), splits)  # fails early and clearly when offline
        return TeacherInfo(None)
    if teacher.checkpoint not in (None, "auto"):
        _check_user_checkpoint(teacher, splits)
        return TeacherInfo(teacher.checkpoint, sha256=teacher.sha256)
    key = teacher_key(teacher, data)
    folder = cache_root() / "teachers" / key
    info = _stored_teacher(folder, warn=True)
    if info is None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(folder.parent / f"{key}.lock"):  # a second trial waits here for the first
            info = _stored_teacher(folder, warn=False)  # trained or repaired while we waited?
            if info is None:
                how = "fine-tuning pretrained" if teacher.fine_tunes else "training"
                logger.info(
                    f"{how} teacher {teacher.label} on {data.dataset} ({teacher.training_recipe.epochs} epochs); "
                    f"stored in {folder} for every later run"
                )
                info = _train_teacher(teacher, splits, folder, gpus=gpus, progress=progress)
    logger.info(
        f"teacher {teacher.label}: val_acc {info.val_acc:.4f} test_acc {info.test_acc:.4f}"
        + ("" if info.trained_now else f" (cached, {folder})")
    )
    return info


def _check_user_checkpoint(teacher: ModelSpec, splits: Splits) -> None:
    """A user's checkpoint cannot be rebuilt, so a damaged one is refused at once, in one line:
    it must load into the model and hold only finite weights (random bytes give NaN/inf)."""
    path = str(teacher.checkpoint)
    if not Path(path).is_file():
        raise SpecError([f"teacher.checkpoint: {path!r}: no such file"])
    if teacher.sha256 and cached_file_digest(path) != teacher.sha256:
        raise SpecError(
            [
                f"teacher.checkpoint: {path!r}: its SHA-256 is not the pinned teacher.sha256 {teacher.sha256[:12]}...; "
                "the file changed since the config was written: restore the pinned teacher, or remove sha256 to "
                "accept this file"
            ]
        )
    model = build_teacher(teacher, TeacherInfo(None), splits)
    try:  # a timm 0.6/0.9 .pth (state_dict/model/module. wrappers, old layouts) or safetensors
        load_weights(model, path)
    except SpecError as exc:  # does not fit the model: one line naming the first mismatching keys
        raise SpecError([f"teacher.checkpoint: {problem}" for problem in exc.problems]) from None
    except _UNREADABLE as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError([f"teacher.checkpoint: {path!r} cannot be read, is it complete? ({reason})"]) from None
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise SpecError([f"teacher.checkpoint: {path!r} holds NaN/inf weights (corrupt or diverged)"])


def _stored_teacher(folder: Path, *, warn: bool) -> TeacherInfo | None:
    """The verified teacher in ``folder``; None when none was stored or it is damaged (then one
    warning naming the file, when ``warn``)."""
    if not folder.exists():
        return None
    problem, info = _check_stored(folder)
    if problem and warn:
        logger.warning(f"teacher store {problem}; retraining the teacher")
    return info


def _check_stored(folder: Path) -> tuple[str | None, TeacherInfo | None]:
    meta_path, weights = folder / "meta.json", folder / WEIGHTS_FILE
    try:
        meta = json.loads(meta_path.read_text())
        accuracy = (float(meta["val_acc"]), float(meta["test_acc"]), float(meta["train_seconds"]))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return f"{meta_path}: unreadable ({type(exc).__name__}: {exc})", None
    record = (meta.get("files") or {}).get(WEIGHTS_FILE)
    if record is None:  # stored before checksums existed: it must load and be finite, then record them
        problem = _unloadable(weights)
        if problem:
            return f"{weights}: {problem}", None
        record = file_record(weights)
        _upgrade(meta_path, {**meta, "files": {WEIGHTS_FILE: record}})
    else:
        problem = file_problem(weights, record)
        if problem:
            return f"{weights}: {problem}", None
    return None, TeacherInfo(str(weights), *accuracy, sha256=record["sha256"])


def _unloadable(weights: Path) -> str | None:
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        return f"cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
        return "holds NaN/inf weights (corrupt)"
    return None


def _upgrade(meta_path: Path, meta: dict[str, Any]) -> None:
    """Add checksums to a teacher stored by an older ofasearch (skipped on a read-only store)."""
    try:
        atomic_write(meta_path, json.dumps(meta, indent=2))
    except OSError as exc:
        logger.info(f"teacher store {meta_path}: checksums not recorded ({exc.strerror})")
        return
    logger.info(f"teacher store {meta_path}: checksums recorded (stored by an older ofasearch)")


def _train_teacher(teacher: ModelSpec, splits: Splits, folder: Path, *, gpus: float, progress: bool) -> TeacherInfo:
    random_seed(TEACHER_SEED)
    model = build_model(
        teacher.model,
        teacher.kwargs,
        **splits.model_args,
        pretrained=teacher.pretrained,  # fine-tuned from the hub's weights (their head is replaced for the data)
    )
    recipe = teacher.training_recipe
    optim = OptimSpec(
        name=recipe.optimizer,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        batch_size=recipe.batch_size,
        epochs=recipe.epochs,
        warmup_epochs=min(1, recipe.epochs - 1),
    )
    distiller = OFADistiller(model, None, splits.num_classes, input_size=splits.input_size, method="none")
    # the best validation epoch's weights, so the recorded accuracies are those of the stored teacher
    result = fit(
        distiller, splits, optim, seed=TEACHER_SEED, device=pick_device(gpus), progress=progress, keep_best=True
    )
    if result.diverged:
        raise RuntimeError(f"teacher {teacher.label} diverged while training; change teacher.recipe")
    with building_dir(folder) as tmp:
        save_model(model, str(tmp / WEIGHTS_FILE))
        share_as_umask_allows(tmp / WEIGHTS_FILE)  # safetensors writes 0600
        record = file_record(tmp / WEIGHTS_FILE)
        meta = {
            "model": teacher.model,
            "kwargs": teacher.kwargs,
            "val_acc": result.best_val_acc,
            "test_acc": result.test_acc,
            "train_seconds": result.train_seconds,
            "epochs": recipe.epochs,
            "fine_tuned_from_pretrained": teacher.pretrained,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "files": {WEIGHTS_FILE: record},
            "versions": package_versions(),
        }
        atomic_write(tmp / "meta.json", json.dumps(meta, indent=2))
    return TeacherInfo(
        str(folder / WEIGHTS_FILE),
        result.best_val_acc,
        result.test_acc,
        result.train_seconds,
        trained_now=True,
        sha256=record["sha256"],
    )


def prepare_logit_cache(
    teacher: ModelSpec,
    info: TeacherInfo,
    data: DataSpec,
    splits: Splits,
    distill: DistillSpec,
    augment: AugmentSpec | None = None,
    *,
    seed: int,
    epochs: int,
    gpus: float = 0.0,
    progress: bool = False,
) -> LogitCache | None:
    """The teacher-logit cache for this teacher, data and seed (built once), or None when
    ``teacher_cache: off`` or there is no teacher to cache."""
    if distill.teacher_cache == "off" or not get_method(distill.method).teacher:
        return None
    # Every view of ofasearch's pipeline (crop, timm transforms, mixup/cutmix) is replayable per
    # (seed, view, sample), so ``auto`` always caches.
    augment = augment or AugmentSpec()
    views = cache_views(epochs, distill.cache_views)
    model = build_teacher(teacher, info, splits)
    if augment.normalize == "dataset":
        mean_std = (tuple(splits.mean), tuple(splits.std))
    else:
        mean, std = normalization(model, splits.in_chans)
        mean_std = (tuple(mean), tuple(std))
    pipeline = Pipeline(augment, splits)
    views_from = augment.model_dump(mode="json", exclude={"eval_crop_pct", "eval_interpolation"})  # train views only
    if pipeline.from_originals:  # crops of the original files: other pixels than the stored squares
        views_from["from_originals"] = True
    if pipeline.tensor_views:  # crops resized on tensors: within a level of the PIL pixels
        views_from["tensor_views"] = True
    key = cache_key(info.checkpoint, teacher.label, data_identity(data), seed, views, views_from, mean_std)
    return open_or_build(
        model,
        splits,
        cache_root() / "logits" / key,
        pipeline=pipeline,
        mean_std=mean_std,
        seed=seed,
        views=views,
        device=pick_device(gpus),
        progress=progress,
    )
