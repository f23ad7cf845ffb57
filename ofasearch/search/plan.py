"""Validate a spec or config the way a run will see it, without training: load the data, build
every model once, measure each student's stages, check the stage choices and checkpoint files.

``validate``, ``run`` and ``train`` all call :func:`plan` first, so a bad input fails the same
way, in seconds, before a teacher is trained or Ray is started.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ofasearch.config import Spec
from ofasearch.data import Splits, load_splits
from ofasearch.errors import SpecError
from ofasearch.models import build_model, describe_model
from ofasearch.search.space import SearchSpace

__all__ = ["plan"]

logger = logging.getLogger(__name__)


def plan(spec: Spec, splits: Splits | None = None) -> SearchSpace:
    """Resolve everything without training: data, every model built once, stage choices checked."""
    splits = splits or load_splits(spec.data)
    stages: list[list[int]] = []
    problems: list[str] = []
    built: dict[str, list[int]] = {}
    for i, pair in enumerate(spec.pairs):
        for role, model in (("teacher", pair.teacher), ("student", pair.student)):
            if model.label in built and role == "student":
                continue
            try:
                net = build_model(
                    model.model,
                    model.kwargs,
                    **splits.model_args,
                )
                if role == "student":
                    built[model.label] = sorted(describe_model(net, splits.input_size).stage_shapes)
            except SpecError as exc:
                problems += [f"pairs[{i}].{role}: {p}" for p in exc.problems]
        stages.append(built.get(pair.student.label, []))
        logger.info(f"pair {i}: {pair.label}; student stages {stages[-1]}")
    for i, pair in enumerate(spec.pairs):
        checkpoint = pair.teacher.checkpoint
        if checkpoint not in (None, "auto") and not Path(checkpoint).is_file():
            problems.append(f"pairs[{i}].teacher.checkpoint: {checkpoint!r}: no such file")
    if problems:
        raise SpecError(problems)
    return SearchSpace(spec, stages)
