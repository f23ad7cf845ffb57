"""The one rule that names what became of a trial, from what it reported.

The recorder writes it into ``trials.parquet``, the progress view prints it, and the readers
(ranking, summary, report) count a trial as full-budget by it, so all of them agree on which
trial ``best.yaml`` is.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BROKEN",
    "COMPLETED",
    "DIVERGED",
    "ERROR",
    "FINISHED",
    "RUNNING",
    "STOPPED",
    "is_full_budget",
    "trial_status",
]

RUNNING = "running"
COMPLETED = "completed"  # ran the full budget (optim.epochs)
STOPPED = "stopped"  # ended early by ASHA: its accuracy comes from fewer epochs
DIVERGED = "diverged"  # the loss became NaN/inf
ERROR = "error"  # the trial raised
FINISHED = (COMPLETED, STOPPED)  # ended normally, with a usable accuracy
BROKEN = (DIVERGED, ERROR)


def trial_status(epochs: int, max_epochs: int, *, diverged: bool, error: bool) -> str:
    """The status of a trial that has ended: an error outranks a divergence (the error says more),
    and a normal end is ``completed`` only when it reached the full budget."""
    if error:
        return ERROR
    if diverged:
        return DIVERGED
    return COMPLETED if epochs >= max_epochs else STOPPED


def is_full_budget(row: dict[str, Any], max_epochs: int) -> bool:
    """Whether a ``trials.parquet`` row completed the full budget: only those are ranked."""
    return row["status"] == COMPLETED and (row["epochs"] or 0) >= max_epochs
