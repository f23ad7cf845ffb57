"""Where a search stands, in ``state.json``: what ``ofasearch resume`` reads to continue it.

A search moves through :class:`Phase` in order; each phase is written *before* its work starts,
so a driver killed at any moment is resumed in the phase it was in. The file is replaced
atomically, so it is never half-written.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from ofasearch.results import folder as results_folder
from ofasearch.utils.files import atomic_write
from ofasearch.utils.storage import Location

__all__ = ["Phase", "read_state", "update_state"]


class Phase(enum.StrEnum):
    """The phases of a search (stored by value in ``state.json``); ``state.json``'s ``phases``
    holds the order a search runs them in."""

    TEACHERS = "teachers"  # teachers and logit caches are prepared, before any trial
    BASELINES = "baselines"  # each pair's baselines at full budget, told to the study
    SEARCH = "search"  # the Optuna/ASHA Tuner
    CONFIRM = "confirm"  # the best configs and the baselines again, on further seeds
    DONE = "done"


def read_state(folder: Location) -> dict[str, Any]:
    """The folder's state (``{}`` before the first write); ``phase`` is a :class:`Phase`."""
    state = results_folder.read_state(folder)
    if "phase" in state:
        state["phase"] = Phase(state["phase"])
    return state


def update_state(folder: Location, **update: Any) -> dict[str, Any]:
    """Merge ``update`` into the folder's state and write it atomically; returns the new state.
    The state it replaces is kept in ``state.json.bak`` first (written the same way), so a
    ``state.json`` a failing disk left empty or damaged falls back to it when read."""
    previous = read_state(folder)

    def as_json(state: dict[str, Any]) -> str:
        return json.dumps({k: v.value if isinstance(v, Phase) else v for k, v in state.items()}, indent=2)

    if previous:
        atomic_write(folder / f"{results_folder.STATE_FILE}.bak", as_json(previous))
    state = {**previous, **update}
    atomic_write(folder / results_folder.STATE_FILE, as_json(state))
    return state
