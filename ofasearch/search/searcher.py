"""The search algorithm: an Optuna study behind Ray Tune's ``Searcher`` interface.

Ray's own ``OptunaSearch`` tells Optuna COMPLETE, with the early-rung score, for a trial ASHA
stopped, so TPE would rank a one-epoch score against full-budget ones. Rather than overriding
its private state, this searcher drives the study through Optuna's public ask-and-tell API:

- ``suggest``: ``study.ask()`` and the define-by-run space (:meth:`SearchSpace.define`); each
  pair's paper defaults are enqueued first. The config it returns says how the trial was proposed
  (:data:`PROPOSED_BY`): ``default``, ``startup`` (TPE's random start), ``tpe`` or ``random``.
- ``on_trial_result``: every epoch's ``val_acc`` as an intermediate value (TPE uses them).
- ``on_trial_complete``: COMPLETE with the final value for a trial that ran the full budget (or
  diverged: its finite sentinel tells TPE the region is bad), PRUNED for one ASHA stopped early,
  FAIL for one that raised.

With ``journal`` the study lives in that file (Optuna's ``JournalStorage`` over a
``JournalFileBackend``: one JSON operation per line, appended under a file lock), so Optuna's own
tools read it while the search runs and after it: ``optuna-dashboard <folder>/optuna.log``,
``optuna.load_study(study_name="search", storage=...)``. A resume restores the searcher from
Tune's saved state and goes on in the same file; trials the journal has that the saved state
does not (asked between Tune's last save and a crash) are told FAIL, and enqueued defaults among
them are enqueued again.
"""

from __future__ import annotations

import math
import pickle
import warnings
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

from ofasearch.config import Spec
from ofasearch.search.space import SearchSpace

__all__ = [
    "METRIC",
    "PROPOSED_BY",
    "STUDY_FILE",
    "STUDY_NAME",
    "OptunaSearcher",
    "PointsSearcher",
    "build_scheduler",
    "build_searcher",
    "default_startup_trials",
    "journal_storage",
]

METRIC = "val_acc"  # what every trial reports each epoch and the search maximises
PROPOSED_BY = "proposed_by"  # key in a trial's config: default | warm-start | startup | tpe | random
STUDY_FILE = "optuna.log"  # the Optuna journal in a search's folder
STUDY_NAME = "search"  # the study's name in it


def journal_storage(path: str | Path) -> JournalStorage:
    """Optuna's journal storage in the file ``path`` (created if missing); what optuna-dashboard
    opens when given the file's path."""
    return JournalStorage(JournalFileBackend(str(path)))


SearcherName = Literal["tpe", "random"]


def default_startup_trials(num_samples: int, defaults: int) -> int:
    """TPE's random start when the spec gives none: 2 trials after the paper defaults (fewer only
    when the budget leaves no TPE trial otherwise). Measured by ``scripts/bench_search.py`` (100
    replays per setting, on its earlier digits table of stages x eps x T x lr): epochs TPE+ASHA
    needs to reach random search's final regret, as a share of random search's, at 16 / 24 / 32
    trials: 0.39 / 0.34 / 0.26 with 2, 0.43 with 1, 0.53 with 0, 0.49 with 8, and 0.47 / 0.45 /
    0.37 with a third of the trials.
    Optuna's own default of 10 would leave a 12-trial search without a single TPE proposal."""
    return max(0, min(2, num_samples - defaults - 1))


class OptunaSearcher(Searcher):
    """Optuna TPE (multivariate, grouped, seeded) or random search over a :class:`SearchSpace`,
    ASHA-aware."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        max_epochs: int,
        searcher: SearcherName = "tpe",
        startup_trials: int | None = None,
        num_samples: int = 0,
        journal: str | Path | None = None,
    ):
        super().__init__(metric=METRIC, mode="max")
        self.space, self.max_epochs, self.name = space, max_epochs, searcher
        self.defaults = len(space.pairs)
        self.startup = (
            startup_trials if startup_trials is not None else default_startup_trials(num_samples, self.defaults)
        )
        self.study = optuna.create_study(
            direction="maximize",
            sampler=self._sampler(seed),
            pruner=optuna.pruners.NopPruner(),
            storage=journal_storage(journal) if journal is not None else None,
            study_name=STUDY_NAME if journal is not None else None,
        )
        for pair in range(self.defaults):
            self.study.enqueue_trial(space.defaults(pair))
        self.trials: dict[str, optuna.Trial] = {}
        self.proposed_by: dict[str, str] = {}
        self.finished: set[str] = set()
        self.warm = 0  # configs of an earlier search enqueued after the defaults (warm start)

    def enqueue_warm(self, params: dict[str, Any]) -> None:
        """Run ``params`` right after the paper defaults (a warm start from a different space)."""
        self.study.enqueue_trial(params, skip_if_exists=True)
        self.warm += 1

    def _sampler(self, seed: int) -> BaseSampler:
        if self.name == "random":
            return RandomSampler(seed=seed)
        with warnings.catch_warnings():  # `group` is marked experimental by Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # Optuna counts the finished defaults among its start-up trials; ours come after them
            n_startup = self.startup + self.defaults
            return TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=n_startup)

    def _next_proposer(self) -> str:
        """Who proposes the trial asked next: the enqueued defaults come first; TPE samples at
        random until ``startup`` trials after them have finished (COMPLETE or PRUNED, as Optuna
        counts; with concurrent trials more than ``startup`` may start before that)."""
        if len(self.trials) < self.defaults:
            return "default"
        if len(self.trials) < self.defaults + getattr(self, "warm", 0):
            return "warm-start"
        if self.name == "random":
            return "random"
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        return "startup" if len(done) < self.startup + self.defaults else "tpe"

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if trial_id not in self.trials:
            proposer = self._next_proposer()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                trial = self.study.ask()
                self.space.define(trial)
            self.trials[trial_id], self.proposed_by[trial_id] = trial, proposer
        return {**self.trials[trial_id].params, PROPOSED_BY: self.proposed_by[trial_id]}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        value = result.get(METRIC)
        if trial_id in self.trials and trial_id not in self.finished and _finite(value):
            step = int(result.get("epoch", result.get("training_iteration", 0)))
            try:
                self.trials[trial_id].report(float(value), step)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # told before a crash that Tune's saved state missed: Tune re-runs it; Optuna keeps the first

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self.trials or trial_id in self.finished:
            return
        self.finished.add(trial_id)
        trial = self.trials[trial_id]
        value = (result or {}).get(METRIC)
        # skip_if_finished: a trial told before a crash is re-run by Tune; the journal keeps the first
        if error or not _finite(value):
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        elif int(result.get("epoch", self.max_epochs)) < self.max_epochs and not result.get("diverged"):
            self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            self.study.tell(trial, float(value), skip_if_finished=True)

    def save(self, checkpoint_path: str) -> None:
        state = {k: getattr(self, k) for k in ("study", "trials", "proposed_by", "finished", "warm")}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        if isinstance(self.study._storage, JournalStorage):
            self._close_orphans()

    def _close_orphans(self) -> None:
        """Trials the journal holds as running that the restored state never asked (a crash
        after Tune's last save): FAIL, so they are not counted as pending; an enqueued default
        among them is enqueued again, so it still runs first."""
        known = {t._trial_id for t in self.trials.values()}
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id in known:
                continue
            self.study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
            if "fixed_params" in frozen.system_attrs:
                self.study.enqueue_trial(frozen.system_attrs["fixed_params"])


class PointsSearcher(Searcher):
    """The fixed points of a grid phase (baselines, confirmation runs), one trial each, in order.

    Through a searcher, Tune names these trials as it names the search's (eight hex digits,
    ``Trial.generate_id``) instead of the grid generator's ``<5 hex>_<index>``: every table,
    progress line and folder shows trial ids in one format."""

    def __init__(self, points: list[dict[str, Any]]):
        super().__init__(metric=METRIC, mode="max")
        self.points, self.given = list(points), 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.given >= len(self.points):
            return Searcher.FINISHED
        self.given += 1
        return {"point": self.points[self.given - 1]}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        pass  # a grid learns nothing

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"points": self.points, "given": self.given}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def build_searcher(spec: Spec, space: SearchSpace, journal: str | Path | None = None) -> OptunaSearcher:
    """The searcher a search runs with (also what ``scripts/bench_search.py`` replays, in memory);
    ``journal``: the file its study lives in."""
    return OptunaSearcher(
        space,
        seed=spec.seed,
        max_epochs=spec.optim.epochs,
        searcher=spec.search.searcher,
        startup_trials=spec.search.startup_trials,
        num_samples=spec.search.num_samples,
        journal=journal,
    )


def build_scheduler(spec: Spec) -> ASHAScheduler:
    """ASHA on ``epoch``: rungs at ``grace_epochs · reduction_factor^k`` up to ``optim.epochs``
    (``grace_epochs`` defaults to the first epoch after the warm-up, see ``plan.check_grace``)."""
    return ASHAScheduler(
        time_attr="epoch",
        max_t=spec.optim.epochs,
        grace_period=spec.search.grace_epochs,
        reduction_factor=spec.search.reduction_factor,
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
