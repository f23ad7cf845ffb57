"""What a search's Optuna study starts from besides its own trials: this search's baselines
(:func:`tell_baselines`) and a finished search (``search.warm_start``, :func:`warm_start`).

The baselines run before the search; each one that is a point of the composition space (its loss
among the choices, its settings within the ranges) is added to the study as a COMPLETE trial, so
TPE models what already works from its first proposal instead of re-discovering it.

Same space (the same pairs, searched values with the same distributions, and budget): every
finished search trial of the old folder is added to the new study as the trial it was for Optuna
(COMPLETE with its last value for a full-budget run or a divergence, PRUNED with its per-epoch
values for an ASHA stop), so TPE models them from the first proposal, as if the search went on.
A different space: the old search's best full-budget configs (up to :data:`TOP_CONFIGS`) are
enqueued where every value fits the new space (their pair exists, each value lies in the new range
or choices), to run right after the paper defaults; one line names what was skipped and why.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState, create_trial

from ofasearch.config import Spec, parse_config
from ofasearch.errors import SpecError
from ofasearch.results.folder import load_folder_spec
from ofasearch.results.outcome import COMPLETED, DIVERGED, STOPPED, is_full_budget
from ofasearch.results.ranking import ranked_trials
from ofasearch.results.tables import EPOCHS_FILE, TRIALS_FILE, read_rows
from ofasearch.search.searcher import OptunaSearcher
from ofasearch.search.space import NotInSpace, SearchSpace, encode

__all__ = ["TOP_CONFIGS", "WarmStart", "same_space", "tell_baselines", "warm_start"]

logger = logging.getLogger(__name__)

TOP_CONFIGS = 3  # a different space: at most this many of the old search's best configs are enqueued


@dataclass
class WarmStart:
    """What a warm start did: trials added (by Optuna state), configs enqueued, what was skipped."""

    same_space: bool
    added: dict[str, int] = field(default_factory=dict)
    enqueued: int = 0
    skipped: list[str] = field(default_factory=list)

    def line(self, folder: Path) -> str:
        """The one line the run prints."""
        if self.same_space:
            counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(self.added.items())) or "none"
            text = f"warm start from {folder} (same space): added its finished trials to the study: {counts}"
        else:
            text = f"warm start from {folder} (different space): enqueued {self.enqueued} of its best configs"
        return text + (f"; skipped {'; '.join(self.skipped)}" if self.skipped else "")


def same_space(old: Spec, new: Spec) -> bool:
    """Whether Optuna would see the old trials as points of the new space: same pairs, the same
    searched values with the same distributions, the same budget (ASHA's rungs)."""
    pairs = [(p.teacher.label, p.student.label) for p in old.pairs] == [
        (p.teacher.label, p.student.label) for p in new.pairs
    ]
    searched = {k: v.model_dump() for k, v in old.searched_values().items()} == {
        k: v.model_dump() for k, v in new.searched_values().items()
    }
    return pairs and searched and old.optim.epochs == new.optim.epochs


def warm_start(searcher: OptunaSearcher, space: SearchSpace, folder: Path) -> WarmStart:
    """Add ``folder``'s search to ``searcher``'s study (see the module docstring)."""
    assert isinstance(space.spec, Spec)
    old = load_folder_spec(folder)
    rows = [r for r in read_rows(folder / TRIALS_FILE) if r["role"] == "search"]
    if same_space(old, space.spec):
        result = WarmStart(same_space=True)
        epochs = read_rows(folder / EPOCHS_FILE) if (folder / EPOCHS_FILE).is_file() else []
        for row in rows:
            _add_finished(searcher, space, row, epochs, result)
    else:
        result = WarmStart(same_space=False)
        all_rows = read_rows(folder / TRIALS_FILE)
        for row in ranked_trials(all_rows, old.optim.epochs, roles=("search",))[:TOP_CONFIGS]:
            params, why = _fitting_params(space, row)
            if params is None:
                result.skipped.append(f"{row['trial_id']} ({why})")
                continue
            searcher.enqueue_warm(params)
            result.enqueued += 1
    logger.info(result.line(folder))
    return result


def tell_baselines(searcher: OptunaSearcher, space: SearchSpace, rows: list[dict[str, Any]]) -> list[str]:
    """Add every completed full-budget baseline of ``rows`` that is a point of ``space`` to the
    study as a COMPLETE trial with its final score (what a search trial tells Optuna) and its
    curve; one line says what was told and what was not a point of the space, and why. Returns
    the lines of the skipped ones."""
    told, skipped = [], []
    for row in rows:
        if row["role"] != "baseline" or row["status"] != COMPLETED or not is_full_budget(row, searcher.max_epochs):
            continue
        config = parse_config(yaml.safe_load(row["config"]), f"baseline {row['trial_id']}", check_models=False)
        try:
            params = space.params_of(config)
        except NotInSpace as exc:
            skipped.append(f"{row['method']} of {row['student']} ({exc})")
            continue
        last = row.get("val_acc_last")
        trial = create_trial(
            params=params,
            distributions=_distributions(space, params),
            value=float(last if last is not None else row["val_acc"] or 0.0),
            state=TrialState.COMPLETE,
            user_attrs={"baseline": str(row["method"]), "trial_id": str(row["trial_id"])},
        )
        searcher.study.add_trial(trial)
        told.append(str(row["method"]))
    if told or skipped:
        text = f"the study starts from {len(told)} baseline(s): {', '.join(told) or 'none'}"
        logger.info(text + (f"; not points of the search space: {'; '.join(skipped)}" if skipped else ""))
    return skipped


def _pair_index(space: SearchSpace, row: dict[str, Any]) -> int | None:
    labels = [(p.teacher.label, p.student.label) for p in space.pairs]
    key = (row["teacher"], row["student"])
    return labels.index(key) if key in labels else None


def _add_finished(
    searcher: OptunaSearcher,
    space: SearchSpace,
    row: dict[str, Any],
    epochs: list[dict[str, Any]],
    result: WarmStart,
) -> None:
    """One old trial as the Optuna trial it was (errors and unfinished ones are left out)."""
    pair = _pair_index(space, row)
    if pair is None or row["status"] not in (COMPLETED, STOPPED, DIVERGED):
        return
    params = _row_params(space, row, pair)
    distributions = _distributions(space, params)
    curve = {int(e["epoch"]): float(e["val_acc"]) for e in epochs if e["trial_id"] == row["trial_id"]}
    curve = {k: v for k, v in curve.items() if v == v}  # NaN: a diverged epoch is not a value
    last = row.get("val_acc_last")
    value = float(last if last is not None else row["val_acc"] or 0.0)
    full = row["status"] == DIVERGED or int(row["epochs"] or 0) >= searcher.max_epochs
    state = TrialState.COMPLETE if full else TrialState.PRUNED
    trial = create_trial(
        params=params,
        distributions=distributions,
        value=value if state is TrialState.COMPLETE else None,
        state=state,
        intermediate_values=curve,
        user_attrs={"warm_start": str(row["trial_id"])},
    )
    searcher.study.add_trial(trial)
    result.added[state.name] = result.added.get(state.name, 0) + 1


def _row_params(space: SearchSpace, row: dict[str, Any], pair: int) -> dict[str, Any]:
    """A trials-table row as Optuna params of ``space`` (lists are stored encoded: ``"1,2,3,4"``)."""
    params: dict[str, Any] = {}
    if len(space.pairs) > 1:
        params["pair"] = space.pairs[pair].label
    for path in space.spec.searched_values():
        if row.get(path) is not None:  # None: a setting the trial's composition did not read
            params[space.param_name(path, pair)] = encode(row[path])
    return params


def _distributions(space: SearchSpace, params: dict[str, Any]) -> dict[str, BaseDistribution]:
    """The distributions the define-by-run space gives these params (asked once in a scratch study)."""
    scratch = optuna.create_study(direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # enqueue_trial is experimental in some Optuna versions
        scratch.enqueue_trial(params)
        trial = scratch.ask()
        space.define(trial)
    return trial.distributions


def _fitting_params(space: SearchSpace, row: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The old config as params of the new space (:meth:`SearchSpace.params_of`), or None and why
    it is not a point of it."""
    try:
        config = parse_config(yaml.safe_load(row["config"]), f"trial {row['trial_id']}", check_models=False)
        return space.params_of(config), ""
    except (SpecError, NotInSpace) as exc:
        return None, exc.problems[0] if isinstance(exc, SpecError) else str(exc)
