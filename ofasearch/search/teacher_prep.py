"""The teachers and teacher-logit caches a search prepares in its driver, before any trial.

Trials then share them and never race to build them; they reach the trials as plain dicts
(``TeacherInfo``/``LogitCache`` fields) in the trainable. A resume prepares them again, which only
verifies an intact entry (checksums) and rebuilds a damaged one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from ofasearch.cluster.shipping import ShippedFile, ship
from ofasearch.config import Spec
from ofasearch.data import Splits, load_splits
from ofasearch.search.space import SearchSpace
from ofasearch.search.state import update_state
from ofasearch.training.logit_cache import LogitCache
from ofasearch.training.teacher import TeacherInfo, prepare_logit_cache, prepare_teacher
from ofasearch.utils.storage import Location

__all__ = ["confirm_caches", "prepare_teachers", "ship_teachers"]

logger = logging.getLogger(__name__)


def prepare_teachers(spec: Spec, space: SearchSpace, folder: Location) -> list[dict[str, Any]]:
    """Every pair's teacher (auto-trained once) and its logit cache, before any trial starts, so
    trials share them and never race to build them."""
    splits = load_splits(spec.data)
    update_state(folder, val_images=len(splits.val))  # how finely val accuracy resolves, for the intervals
    teachers: list[dict[str, Any]] = []
    for i, pair in enumerate(space.pairs):
        info = prepare_teacher(pair.teacher, spec.data, splits, gpus=spec.resources.gpus())
        cache = _logit_cache(spec, space, i, info, splits, spec.seed)
        teachers.append({"info": asdict(info), "cache": cache, "cache_seed": spec.seed})
    return teachers


def _logit_cache(
    spec: Spec, space: SearchSpace, pair: int, info: TeacherInfo, splits: Splits, seed: int
) -> dict[str, Any] | None:
    """The teacher-logit cache of ``pair`` for runs of ``seed`` (its augmentation views), built
    once; None (the teacher runs live) when the spec searches an augmentation value."""
    augment = space.cache_augment(pair)
    settings = space.cache_settings()
    if augment is None:
        if settings.method != "none" and settings.teacher_cache != "off":
            searched = [p for p in spec.searched_values() if p.startswith("augment.")]
            logger.info(
                f"teacher-logit cache off for pair {pair}: the spec searches {', '.join(searched)}, so trials "
                "see different views; the teacher runs live in every trial"
            )
        return None
    cache = prepare_logit_cache(
        space.pairs[pair].teacher,
        info,
        spec.data,
        splits,
        settings,
        augment,
        seed=seed,
        epochs=spec.optim.epochs,
        gpus=spec.resources.gpus(),
        progress=True,
    )
    return asdict(cache) if cache else None


def ship_teachers(teachers: list[dict[str, Any]]) -> dict[str, ShippedFile]:
    """Every teacher's weights and logit-cache file in Ray's object store, keyed by the driver's
    path (Ray must be started): trials copy them to their node instead of opening the driver's."""
    files: dict[str, ShippedFile] = {}
    for teacher in teachers:
        info = TeacherInfo(**teacher["info"])
        if info.checkpoint:
            files[info.checkpoint] = ship(info.checkpoint, info.sha256)
        for cached in [teacher.get("cache"), *(teacher.get("caches") or {}).values()]:
            if cached:
                cache = LogitCache(**cached)
                if str(cache.path) not in files:
                    files[str(cache.path)] = ship(cache.path, cache.sha256, cache.expected_bytes)
    return files


def confirm_caches(spec: Spec, space: SearchSpace, teachers: list[dict[str, Any]], seeds: list[int]) -> None:
    """Logit caches for the confirmation seeds (each seed augments differently), into ``teachers``
    (built once, verified on every call)."""
    splits = load_splits(spec.data)
    for pair, teacher in enumerate(teachers):
        info = TeacherInfo(**teacher["info"])
        teacher["caches"] = {str(seed): _logit_cache(spec, space, pair, info, splits, seed) for seed in seeds}
