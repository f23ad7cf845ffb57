"""The teachers and teacher-logit caches a search prepares in its driver, before any trial.

Trials then share them and never race to build them; they reach the trials as plain dicts
(``TeacherInfo``/``LogitCache`` fields) in the trainable. A resume prepares them again, which only
verifies an intact entry (checksums) and rebuilds a damaged one.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ofasearch.config import PairSpec, Spec
from ofasearch.data import Splits, load_splits
from ofasearch.search.space import SearchSpace
from ofasearch.search.state import update_state
from ofasearch.training.teacher import TeacherInfo, prepare_logit_cache, prepare_teacher
from ofasearch.utils.storage import Location

__all__ = ["confirm_caches", "prepare_teachers"]


def prepare_teachers(spec: Spec, space: SearchSpace, folder: Location) -> list[dict[str, Any]]:
    """Every pair's teacher (auto-trained once) and its logit cache, before any trial starts, so
    trials share them and never race to build them."""
    splits = load_splits(spec.data)
    update_state(folder, val_images=len(splits.val))  # how finely val accuracy resolves, for the intervals
    teachers: list[dict[str, Any]] = []
    for pair in space.pairs:
        info = prepare_teacher(pair.teacher, spec.data, splits, gpus=spec.resources.gpus_per_worker)
        cache = _logit_cache(spec, space, pair, info, splits, spec.seed)
        teachers.append({"info": asdict(info), "cache": cache, "cache_seed": spec.seed})
    return teachers


def _logit_cache(
    spec: Spec, space: SearchSpace, pair: PairSpec, info: TeacherInfo, splits: Splits, seed: int
) -> dict[str, Any] | None:
    """The teacher-logit cache of ``pair`` for runs of ``seed`` (its augmentation views), built once."""
    cache = prepare_logit_cache(
        pair.teacher,
        info,
        spec.data,
        splits,
        space.cache_settings(),
        seed=seed,
        epochs=spec.optim.epochs,
        gpus=spec.resources.gpus_per_worker,
        progress=True,
    )
    return asdict(cache) if cache else None


def confirm_caches(spec: Spec, space: SearchSpace, teachers: list[dict[str, Any]], seeds: list[int]) -> None:
    """Logit caches for the confirmation seeds (each seed augments differently), into ``teachers``
    (built once, verified on every call)."""
    splits = load_splits(spec.data)
    for pair, teacher in zip(space.pairs, teachers, strict=True):
        info = TeacherInfo(**teacher["info"])
        teacher["caches"] = {str(seed): _logit_cache(spec, space, pair, info, splits, seed) for seed in seeds}
