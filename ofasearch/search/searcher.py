"""The search algorithm: an Optuna study behind Ray Tune's ``Searcher`` interface.

Ray's own ``OptunaSearch`` tells Optuna COMPLETE, with the early-rung score, for a trial ASHA
stopped, so TPE would rank a one-epoch score against full-budget ones. Rather than overriding
its private state, this searcher drives the study through Optuna's public ask-and-tell API:

- ``suggest``: ``study.ask()`` and the define-by-run space (:meth:`SearchSpace.define`); the
  pair's paper defaults are enqueued first.
- ``on_trial_result``: every epoch's ``val_acc`` as an intermediate value (TPE uses them).
- ``on_trial_complete``: COMPLETE with the final value for a trial that ran the full budget (or
  diverged: its finite sentinel tells TPE the region is bad), PRUNED for one ASHA stopped early,
  FAIL for one that raised.
"""

from __future__ import annotations

import math
import pickle
import warnings
from typing import Any

import optuna
from optuna.samplers import TPESampler
from optuna.trial import TrialState
from ray.tune.search import Searcher

from ofasearch.search.space import SearchSpace

__all__ = ["METRIC", "OptunaSearcher"]

METRIC = "val_acc"  # what every trial reports each epoch and the search maximises


class OptunaSearcher(Searcher):
    """Optuna TPE (multivariate, grouped, seeded) over a :class:`SearchSpace`, ASHA-aware."""

    def __init__(self, space: SearchSpace, *, seed: int, max_epochs: int):
        super().__init__(metric=METRIC, mode="max")
        self.space, self.max_epochs = space, max_epochs
        with warnings.catch_warnings():  # `group` is marked experimental by Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = TPESampler(seed=seed, multivariate=True, group=True)
        self.study = optuna.create_study(direction="maximize", sampler=sampler, pruner=optuna.pruners.NopPruner())
        for pair in range(len(space.pairs)):
            self.study.enqueue_trial(space.defaults(pair))
        self.trials: dict[str, optuna.Trial] = {}
        self.finished: set[str] = set()

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if trial_id not in self.trials:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                trial = self.study.ask()
                self.space.define(trial)
            self.trials[trial_id] = trial
        return dict(self.trials[trial_id].params)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        value = result.get(METRIC)
        if trial_id in self.trials and trial_id not in self.finished and _finite(value):
            self.trials[trial_id].report(float(value), int(result.get("epoch", result.get("training_iteration", 0))))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self.trials or trial_id in self.finished:
            return
        self.finished.add(trial_id)
        trial = self.trials[trial_id]
        value = (result or {}).get(METRIC)
        if error or not _finite(value):
            self.study.tell(trial, state=TrialState.FAIL)
        elif int(result.get("epoch", self.max_epochs)) < self.max_epochs and not result.get("diverged"):
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, float(value))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"study": self.study, "trials": self.trials, "finished": self.finished}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.study, self.trials, self.finished = state["study"], state["trials"], state["finished"]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
