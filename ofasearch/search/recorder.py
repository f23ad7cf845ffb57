"""What a search writes while it runs: ``trials.parquet`` and ``epochs.parquet``, fed by a Tune callback.

Both tables are rewritten atomically on every change (see :func:`ofasearch.results.tables.write_table`),
so a reader, ``ofasearch status`` or a crash never sees a half-written file. After a restore the
callback rebuilds the tables from disk and forgets rows of trials Tune never saved.
"""

from __future__ import annotations

import math
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from ofasearch.cluster.node import NODE_KEY
from ofasearch.config import Spec, TrainConfig
from ofasearch.results.outcome import DIVERGED, ERROR, RUNNING, trial_status
from ofasearch.results.tables import (
    COST_COLUMNS,
    EPOCH_COLUMNS,
    EPOCHS_FILE,
    TRIAL_COLUMNS,
    TRIALS_FILE,
    read_rows,
    write_table,
)
from ofasearch.search.progress import error_text
from ofasearch.search.searcher import PROPOSED_BY
from ofasearch.search.space import SearchSpace, encode
from ofasearch.search.trial import BASELINE_KEY, CONFIRMS_KEY, backend_for, trial_config
from ofasearch.utils.killpoints import kill_point
from ofasearch.utils.storage import Location, as_location

__all__ = ["Recorder", "ResultTables", "trial_params"]


class ResultTables:
    """The two tables in memory, loaded from disk on resume and saved after every change."""

    def __init__(self, folder: Location, space: SearchSpace, *, load: bool = True, autosave: bool = True):
        """``load``: start from the tables on disk (a resume); ``autosave``: write both after every
        change (a rebuild from Tune's folders writes once, at the end, with :meth:`write`)."""
        self.folder = folder
        self.space = space
        self.max_epochs = space.spec.optim.epochs
        self.autosave = autosave
        self.trials: dict[str, dict[str, Any]] = {}
        self.epochs: dict[tuple[str, int], dict[str, Any]] = {}
        if load:
            self.trials = {r["trial_id"]: r for r in read_rows(folder / TRIALS_FILE)}
            self.epochs = {(r["trial_id"], int(r["epoch"])): r for r in read_rows(folder / EPOCHS_FILE)}

    def _row(self, trial_id: str, params: dict[str, Any]) -> dict[str, Any]:
        row = self.trials.get(trial_id)
        if row is None:
            config = trial_config(self.space, params)
            role = "confirm" if CONFIRMS_KEY in params else "baseline" if BASELINE_KEY in params else "search"
            row = {
                "trial_id": trial_id,
                "role": role,
                "proposed_by": params.get(PROPOSED_BY) if role == "search" else None,
                "confirms": params.get(CONFIRMS_KEY),
                "status": "running",
                "teacher": config.pair.teacher.label,
                "student": config.pair.student.label,
                "method": config.distill.method,
                "composition": config.distill.composition,
                "val_acc": 0.0,
                "val_acc_last": 0.0,
                "epochs": 0,
                "seconds": 0.0,
                "error": None,
                "seed": config.seed,
                "backend": backend_for(config.resources),
                "teacher_cache": False,
                "node": None,
                "config": config.to_yaml(),
            }
            active = config.distill.active_settings()
            for path in self.space.spec.searched_values():
                if path.startswith("distill.") and path.split(".", 1)[1] not in active:
                    row[path] = None  # not a setting of this composition: its value means nothing
                    continue
                value = _dotted_value(config, path)
                row[path] = str(encode(value)) if isinstance(value, list) else value
            self.trials[trial_id] = row
        return row

    def on_result(self, trial_id: str, params: dict[str, Any], result: dict[str, Any]) -> None:
        row = self._row(trial_id, params)
        epoch = int(result.get("epoch", 0))
        val = _finite(result.get("val_acc"))
        self.epochs[(trial_id, epoch)] = {
            "trial_id": trial_id,
            "role": row["role"],
            "epoch": epoch,
            "train_loss": _finite(result.get("train_loss")),
            "val_acc": val,
            "lr": _finite(result.get("lr")),
            "seconds": _finite(result.get("seconds")),
        }
        row.update(
            status=DIVERGED if result.get("diverged") else RUNNING,
            val_acc=max(row["val_acc"] or 0.0, val or 0.0),
            val_acc_last=val,
            epochs=epoch,
            seconds=(row["seconds"] or 0.0) + (_finite(result.get("seconds")) or 0.0),
            teacher_cache=bool(result.get("teacher_cache", False)),
        )
        row.update({k: result[k] for k in COST_COLUMNS if k in result})  # the student's size and speed
        if result.get(NODE_KEY):
            row["node"] = result[NODE_KEY]
        if result.get("diverged"):
            row["error"] = "loss became NaN/inf; trial stopped"
        self.save()

    def on_start(self, trial_id: str, params: dict[str, Any]) -> None:
        """A trial (re)starts from epoch 0 (after a crash it re-runs): drop what it reported before."""
        self.trials.pop(trial_id, None)
        self.epochs = {k: v for k, v in self.epochs.items() if k[0] != trial_id}
        row = self._row(trial_id, params)
        self.save()
        started = sum(r["role"] == row["role"] for r in self.trials.values())
        kill_point(f"{row['role']}-started:{started}")  # e.g. `search-started:4`: its row is written

    def keep_only(self, role: str, trial_ids: set[str], keep_finished: bool = False) -> list[str]:
        """Drop rows of ``role`` trials that Tune does not know (reported after its last saved
        state, before a crash): Tune runs new trials in their place. ``keep_finished`` (grid
        phases, re-run in a fresh Tuner) keeps the finished ones. Returns the dropped ids."""
        dropped = [
            t
            for t, r in self.trials.items()
            if r["role"] == role and t not in trial_ids and not (keep_finished and r["status"] != RUNNING)
        ]
        for trial_id in dropped:
            del self.trials[trial_id]
        self.epochs = {k: v for k, v in self.epochs.items() if k[0] not in dropped}
        if dropped:
            self.save()
        return dropped

    def on_end(self, trial_id: str, params: dict[str, Any], error: str | None = None) -> None:
        row = self._row(trial_id, params)
        diverged = row["status"] == DIVERGED
        row["status"] = trial_status(row["epochs"], self.max_epochs, diverged=diverged, error=error is not None)
        if row["status"] == ERROR:
            row["error"] = error
        self.save()
        ended = sum(r["role"] == row["role"] and r["status"] != RUNNING for r in self.trials.values())
        kill_point(f"{row['role']}:{ended}")  # e.g. `search:2`: after the 2nd search trial's row is written

    def save(self) -> None:
        if self.autosave:
            self.write()

    def write(self, names: tuple[str, ...] = (TRIALS_FILE, EPOCHS_FILE)) -> None:
        """Write the tables named (both by default), each atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if TRIALS_FILE in names:
            write_table(list(self.trials.values()), TRIAL_COLUMNS, self.folder / TRIALS_FILE)
        if EPOCHS_FILE in names:
            rows = sorted(self.epochs.values(), key=lambda r: (r["trial_id"], r["epoch"]))
            write_table(rows, EPOCH_COLUMNS, self.folder / EPOCHS_FILE)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _dotted_value(config: TrainConfig, path: str) -> Any:
    section, key = path.split(".", 1)
    return getattr(getattr(config, section), key)


class Recorder(tune.Callback):
    """Tune callback feeding :class:`ResultTables`; the tables are rebuilt from disk after a
    restore (they are not pickled with the Tuner)."""

    def __init__(
        self, folder: str, spec: dict[str, Any], stages: list[list[int]], role: str, *, keep_finished: bool = False
    ):
        self.folder, self.spec, self.stages, self.role = folder, spec, stages, role
        self.keep_finished = keep_finished
        self.tables: ResultTables | None = None
        self.reconciled = False
        self.failed: OSError | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "tables": None, "reconciled": False, "failed": None}

    def _ended(self, trial_id: str, params: dict[str, Any], error: str | None = None) -> None:
        """A trial's last row. Tune logs and swallows what a callback raises while it stops a
        trial, so a write that fails here (a full disk) is kept and raised at the next step,
        where it ends the phase as the one-line fault it is."""
        try:
            self._tables().on_end(trial_id, params, error=error)
        except OSError as exc:
            self.failed = self.failed or exc

    def _tables(self) -> ResultTables:
        if self.tables is None:
            space = SearchSpace(Spec.model_validate(self.spec), self.stages)
            self.tables = ResultTables(as_location(self.folder), space)
        return self.tables

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        """First step (also after a restore): forget rows of trials Tune does not know. A table
        write that failed as a trial ended is raised here."""
        if self.failed is not None:
            raise self.failed
        if not self.reconciled:
            self.reconciled = True
            self._tables().keep_only(self.role, {t.trial_id for t in trials}, self.keep_finished)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._tables().on_start(trial.trial_id, trial_params(trial.config))

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        self._tables().on_result(trial.trial_id, trial_params(trial.config), result)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._ended(trial.trial_id, trial_params(trial.config))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._ended(trial.trial_id, trial_params(trial.config), error=error_text(trial))

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        if self.failed is not None:  # the phase's last trial ended with a failed write
            raise self.failed


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's Optuna params (baselines run from a grid, under ``point``)."""
    return config.get("point", config)
