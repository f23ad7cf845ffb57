"""The one rule for a trial's status, and which rows count as full-budget."""

import pytest

from ofasearch.results.outcome import is_full_budget, trial_status


@pytest.mark.parametrize(
    ("epochs", "diverged", "error", "expected"),
    [
        (3, False, False, "completed"),
        (5, False, False, "completed"),  # more epochs than the budget (a resumed trial) still completes
        (2, False, False, "stopped"),
        (0, False, False, "stopped"),
        (3, True, False, "diverged"),
        (1, True, False, "diverged"),
        (3, False, True, "error"),
        (1, True, True, "error"),  # the error says more than the NaN loss before it
    ],
)
def test_trial_status(epochs, diverged, error, expected):
    assert trial_status(epochs, 3, diverged=diverged, error=error) == expected


def test_only_completed_rows_at_the_budget_are_full_budget(trial_rows):
    full = {r["trial_id"] for r in trial_rows if is_full_budget(r, 3)}
    assert full == {"base_0", "base_1", "base_2", "base_3", "mix_best", "mix_tie", "vit_done"}
    assert not any(is_full_budget(r, 4) for r in trial_rows), "a larger budget: nothing ran it"
    assert not is_full_budget({"status": "completed", "epochs": None}, 1)
