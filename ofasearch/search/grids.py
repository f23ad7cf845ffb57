"""The fixed grids of a search, and what a resume still has to run of them.

Two grids of full-budget runs: before the search, the baselines (each pair's ``search.baselines``
methods, by default student alone, vanilla KD, DKD and DIST, at the pair's defaults and their
preset's settings; told to the search's study where they are points of its space) and, after
it, with ``search.confirm``, the best configs and the baselines again on further seeds (never
shown to Optuna). A grid is resumed by running the points that
have no finished row in ``trials.parquet``, so a kill at any moment runs each point exactly once.
"""

from __future__ import annotations

from typing import Any

from ofasearch.config import Spec
from ofasearch.results.outcome import COMPLETED, RUNNING
from ofasearch.results.ranking import ranked_trials
from ofasearch.results.tables import TRIALS_FILE, read_rows
from ofasearch.search.space import SearchSpace
from ofasearch.search.trial import BASELINE_KEY, CONFIG_KEY, CONFIRMS_KEY, SEED_KEY, trial_config
from ofasearch.utils.storage import Location

__all__ = ["baseline_points", "confirm_points", "confirm_seeds", "not_finished"]


def baseline_points(space: SearchSpace) -> list[dict[str, Any]]:
    """Each pair's defaults, trained with each method of ``search.baselines`` (its settings:
    :meth:`SearchSpace.baseline_overrides`)."""
    assert isinstance(space.spec, Spec)
    methods = space.spec.search.baselines
    return [{**space.defaults(i), BASELINE_KEY: m} for i in range(len(space.pairs)) for m in methods]


def confirm_seeds(spec: Spec) -> list[int]:
    """The seeds confirmation adds: the search ran ``seed``; then ``seed + 1`` ... ``seed + seeds - 1``."""
    assert spec.search.confirm is not None
    return [spec.seed + k for k in range(1, spec.search.confirm.seeds)]


def confirm_points(spec: Spec, folder: Location) -> list[dict[str, Any]]:
    """One run per (config, further seed): the ``top_k`` best distinct full-budget search configs
    (by their single search run) and every completed baseline."""
    assert spec.search.confirm is not None
    rows = [r for r in read_rows(folder / TRIALS_FILE) if r["role"] != "confirm"]  # the same on resume
    chosen: dict[str, dict[str, Any]] = {}
    for row in ranked_trials(rows, spec.optim.epochs, roles=("search",)):  # best first; identical configs once
        if len(chosen) < spec.search.confirm.top_k:
            chosen.setdefault(row["config"], row)
    baselines = [r for r in rows if r["role"] == "baseline" and r["status"] == COMPLETED]
    return [
        {CONFIG_KEY: row["config"], SEED_KEY: seed, CONFIRMS_KEY: row["trial_id"]}
        for row in [*chosen.values(), *baselines]
        for seed in confirm_seeds(spec)
    ]


def not_finished(
    space: SearchSpace, points: list[dict[str, Any]], rows: list[dict[str, Any]], role: str
) -> list[dict[str, Any]]:
    """The grid points no finished ``role`` row in the table already ran (a kill leaves rows of
    cut trials ``running``: those points run again)."""

    def key(role: str, confirms: str | None, teacher: str, student: str, method: str, seed: int) -> tuple:
        return role, confirms, teacher, student, method, int(seed)

    done = {
        key(r["role"], r.get("confirms"), r["teacher"], r["student"], r["method"], r["seed"])
        for r in rows
        if r["role"] == role and r["status"] != RUNNING
    }
    remaining = []
    for point in points:
        config = trial_config(space, point)
        pair = config.pair
        method, seed = config.distill.method, config.seed
        mine = key(role, point.get(CONFIRMS_KEY), pair.teacher.label, pair.student.label, method, seed)
        if mine not in done:
            remaining.append(point)
    return remaining
