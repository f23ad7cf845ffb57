"""The live view of a running search: one line per finished trial and a status line (trials
ended/running, best so far, elapsed and estimated time left) instead of Ray Tune's tables.

Everything is derived from Tune's own trial list at each step, so the view is right after a
``resume`` too. ``ofasearch run --verbose`` shows Ray's tables and the trials' output instead.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from ofasearch.results.outcome import trial_status
from ofasearch.results.tune_folders import last_error_line
from ofasearch.search.searcher import PROPOSED_BY
from ofasearch.search.trial import BASELINE_KEY, CONFIG_KEY
from ofasearch.utils.formatting import format_duration, short

__all__ = ["ProgressView", "error_text", "outcome"]

logger = logging.getLogger(__name__)

HEARTBEAT_S = 30.0


def outcome(trial: Any, max_epochs: int, ended: bool = False) -> str:
    """What became of a trial: pending, running, completed, stopped (by ASHA), diverged or error.
    ``ended``: Tune is ending it (its status still says RUNNING inside ``on_trial_complete``)."""
    if trial.status != "ERROR" and trial.status != "TERMINATED" and not ended:
        return "running" if trial.status == "RUNNING" else "pending"
    last = trial.last_result or {}
    epochs = int(last.get("epoch", 0))
    return trial_status(epochs, max_epochs, diverged=bool(last.get("diverged")), error=trial.status == "ERROR")


class ProgressView(tune.Callback):
    """Prints progress of one Tuner (``phase`` "search" or "baselines") of ``total`` trials."""

    def __init__(self, phase: str, total: int, max_epochs: int):
        self.phase, self.total, self.max_epochs = phase, total, max_epochs
        self.started = time.monotonic()
        self.last_line = 0.0
        self.done_at_start: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune saves callbacks with the Tuner; a restored view counts the trials done afresh.
        return {**self.__dict__, "done_at_start": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.started = time.monotonic()

    def status_line(self, trials: list[Any], ending: Any = None) -> str:
        counts: dict[str, int] = {}
        for trial in trials:
            kind = outcome(trial, self.max_epochs, ended=trial is ending)
            counts[kind] = counts.get(kind, 0) + 1
        ended = sum(v for k, v in counts.items() if k not in ("running", "pending"))
        if self.done_at_start is None:
            self.done_at_start = ended
        best = max(
            (t for t in trials if outcome(t, self.max_epochs, ended=t is ending) == "completed"),
            key=lambda t: (t.last_result or {}).get("val_acc", 0.0),
            default=None,
        )
        elapsed = time.monotonic() - self.started
        parts = [f"{counts.get(k, 0)} {k}" for k in ("completed", "stopped", "diverged", "error") if counts.get(k)]
        line = f"[{self.phase}] {ended}/{self.total} ended" + (f" ({', '.join(parts)})" if parts else "")
        line += f", {counts.get('running', 0)} running"
        if best is not None and self.phase == "search":
            line += f" | best val_acc {best.last_result.get('val_acc', 0.0):.4f} (trial {best.trial_id})"
        line += f" | {format_duration(elapsed)} elapsed"
        new = ended - self.done_at_start
        if 0 < new and ended < self.total:
            line += f", ~{format_duration(elapsed / new * (self.total - ended))} left"
        return line

    def _print_status(self, trials: list[Any], ending: Any = None) -> None:
        self.last_line = time.monotonic()
        logger.info(self.status_line(trials, ending))

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if self.done_at_start is None:
            self.status_line(trials)  # counts what a restored experiment had already finished

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if time.monotonic() - self.last_line >= HEARTBEAT_S:
            self._print_status(trials)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        params = dict(trial.config.get("point", trial.config))
        proposer = params.pop(PROPOSED_BY, None)
        params.pop(CONFIG_KEY, None)  # a confirmation run's whole config: its trial id and seed say it
        if BASELINE_KEY in params:  # its own settings replace the pair's distill defaults
            params = {k: v for k, v in params.items() if k == BASELINE_KEY or not k.startswith("distill.")}
        values = " ".join(f"{k.split('__')[0].split('.')[-1]}={short(v)}" for k, v in sorted(params.items()))
        by = f" ({proposer})" if proposer else ""
        logger.info(f"[{self.phase}] trial {trial.trial_id} started{by}: {values}")

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        last = trial.last_result or {}
        kind = outcome(trial, self.max_epochs, ended=True)
        what = {"stopped": f"stopped by ASHA after epoch {last.get('epoch')}", "diverged": "diverged (loss NaN/inf)"}
        logger.info(
            f"[{self.phase}] trial {trial.trial_id} {what.get(kind, kind)}: "
            f"val_acc {last.get('val_acc', 0.0):.4f} after {last.get('epoch', 0)}/{self.max_epochs} epochs"
        )
        self._print_status(trials, ending=trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        logger.info(f"[{self.phase}] trial {trial.trial_id} failed: {error_text(trial)}")
        self._print_status(trials, ending=trial)


def error_text(trial: Any) -> str:
    """The last line of a failed trial's error (the exception message), for tables and the view."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else None
    except OSError:
        text = None
    return last_error_line(text)
