"""A search's winners as train configs: ``best.yaml`` after a search, and ``ofasearch export`` for
any of its top configs, optionally the most accurate one under a latency or size limit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from ofasearch.config import TrainConfig, parse_config
from ofasearch.errors import SpecError
from ofasearch.results.folder import ResultsFolder, read_folder, read_folder_spec, read_state
from ofasearch.results.ranking import best_trial, composition_of, ranked_trials, student_latency
from ofasearch.utils.files import atomic_write, cached_file_digest
from ofasearch.utils.storage import Location

__all__ = ["choose_trial", "export_config", "write_best"]

logger = logging.getLogger(__name__)


def write_best(folder: Location, rows: list[dict[str, Any]], max_epochs: int) -> Location | None:
    """``best.yaml``: the winning trial's complete train config (full budget), or None yet."""
    best = best_trial(rows, max_epochs)
    if best is None:
        return None
    score = f"val_acc {best['val_acc_mean']:.4f} ({_seeds_text(best)})"
    header = f"# best of {folder.name}: {_what(best)}, {score}\n"
    try:  # pinned to the search's teacher file; never a reason for a finished search to fail
        results = ResultsFolder(folder, read_folder_spec(folder), read_state(folder), rows)
        text = _config_yaml(best, None, results)
    except SpecError as exc:
        logger.warning(f"best.yaml: teacher not pinned ({exc.problems[0]})")
        text = best["config"]
    return atomic_write(folder / "best.yaml", header + text)


def _what(row: dict[str, Any]) -> str:
    """``baseline 1a2b3c4d (dist)`` or ``trial 5e6f7a8b (dist + ofa@3,4)``: what the config is."""
    role = "baseline" if row["role"] == "baseline" else "trial"
    return f"{role} {row['trial_id']} ({composition_of(row)})"


def _seeds_text(row: dict[str, Any]) -> str:
    return f"mean of {row['seeds']} seeds" if row["seeds"] > 1 else "1 seed"


def choose_trial(
    rows: list[dict[str, Any]],
    max_epochs: int,
    rank: int = 1,
    max_latency_ms: float | None = None,
    max_params: int | None = None,
) -> dict[str, Any]:
    """The ``rank``-th best full-budget candidate (search trial or baseline, the ranking
    ``best.yaml`` comes from) among those within the limits (latency: the
    batch-1 latency of the trial's student on its device, median over that student's trials)."""
    if rank < 1:
        raise SpecError([f"--rank: {rank} is not allowed; must be >= 1 (1 = best)"])
    ranked = ranked_trials(rows, max_epochs)
    limits = []
    for flag, column, limit in (
        ("--max-latency-ms", "latency_ms_b1", max_latency_ms),
        ("--max-params", "params", max_params),
    ):
        if limit is None:
            continue
        if limit <= 0:
            raise SpecError([f"{flag}: {limit:g} is not allowed; must be > 0"])
        if ranked and any(r.get(column) is None for r in ranked):
            raise SpecError([f"{flag}: this search recorded no {column} per trial (made by an older ofasearch)"])
        ranked = [r for r in ranked if r[column] <= limit]
        limits.append(f"{flag} {limit:g}")
    if rank > len(ranked):
        within = f" within {' and '.join(limits)}" if limits else ""
        raise SpecError(
            [f"--rank: {rank} is not allowed; the search has {len(ranked)} full-budget candidate(s){within}"]
        )
    return ranked[rank - 1]


def _config_yaml(row: dict[str, Any], name: str | None, results: ResultsFolder | None = None) -> str:
    """The trial's config (renamed unless ``name`` is None), as today's schema writes it, its
    teacher pinned by content (:func:`pin_teacher`); a config it rejects (written by another
    version) is passed on as recorded, and ``ofasearch train`` reports what to change."""
    data = yaml.safe_load(row["config"])
    source = f"trial {row['trial_id']}"
    try:
        config = parse_config(data, source, check_models=False)
    except SpecError as exc:
        if not isinstance(data, dict):
            raise
        logger.warning(f"{source}: config exported as recorded; today's schema rejects it: {exc.problems[0]}")
        return yaml.safe_dump({**data, "name": name or data.get("name")}, sort_keys=False)
    config = config.model_copy(update={"name": name or config.name})
    if results is not None:
        config = pin_teacher(config, results)
    return config.to_yaml()


def pin_teacher(config: TrainConfig, results: ResultsFolder) -> TrainConfig:
    """``checkpoint: auto`` (or a path) replaced by the teacher file the search used and its
    SHA-256, from ``state.json``: the exported config trains against that exact teacher, and
    ``ofasearch train`` refuses a file whose content differs, instead of training a new teacher
    because a data setting or the recipe changed. A pretrained (hub) teacher is left as it is."""
    teacher = config.pair.teacher
    labels = [(p.teacher, p.student) for p in results.spec.pairs]
    key = (teacher.label, config.pair.student.label)
    prepared = results.state.get("teachers") or []
    if key not in labels or labels.index(key) >= len(prepared):
        logger.warning(f"{results.path}: the search recorded no teacher for {teacher.label}; not pinned")
        return config
    info = prepared[labels.index(key)].get("info") or {}
    path = info.get("checkpoint")
    if not path:
        return config  # pretrained from the hub: nothing on disk to pin
    digest = info.get("sha256")
    if digest is None:  # a user's checkpoint: hashed now
        if not Path(path).is_file():
            raise SpecError([f"pairs[0].teacher.checkpoint: {path!r}: no such file (the search's teacher)"])
        digest = cached_file_digest(path)
    pinned = teacher.model_copy(update={"checkpoint": str(path), "sha256": digest, "pretrained": False, "recipe": None})
    pair = config.pair.model_copy(update={"teacher": pinned})
    return config.model_copy(update={"pairs": [pair]})


def export_config(
    folder: str | Location,
    output: Location | None = None,
    *,
    rank: int = 1,
    max_latency_ms: float | None = None,
    max_params: int | None = None,
) -> tuple[Location, dict[str, Any]]:
    """Write the chosen trial's complete train config (``ofasearch train FILE`` runs it);
    returns the file and the trial's row."""
    results = read_folder(folder)
    rows = student_latency(results.trials)
    row = choose_trial(rows, results.spec.max_epochs, rank, max_latency_ms, max_params)
    output = output or results.path / f"rank{rank}.yaml"
    cost = ""
    if row.get("latency_ms_b1") is not None:
        cost = f", {row['params'] / 1e6:.2f}M params, {row['latency_ms_b1']:.2f} ms/image ({row.get('device')})"
    header = (
        f"# exported from {results.path} (rank {rank}): {_what(row)}, "
        f"val_acc {row['val_acc_mean']:.4f} ({_seeds_text(row)}) after {row['epochs']} epochs{cost}\n"
        "# train it: ofasearch train THIS_FILE [--workers N --gpus-per-worker G]; raise optim.epochs for production\n"
    )
    atomic_write(output, header + _config_yaml(row, f"{results.spec.name}-rank{rank}", results))
    return output, row
