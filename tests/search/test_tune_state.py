"""Tune's saved state of the search: a complete copy is kept, a damaged newest state (a write a
full disk cut short) is replaced by it before a restore, and without a copy a resume refuses in
one line instead of letting Tune silently start the search afresh. The disk-full run itself is
in tests/test_faults.py."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from ofasearch.errors import FileFault
from ofasearch.search.tune_state import KEPT_DIR, StateKeeper, repair_saved_state, saved_state_files
from tests.helpers.logcapture import log_lines

SESSION = "2026-01-01_00-00-00"


def _save(experiment: Path, trials: int) -> list[Path]:
    """The files a Tune save writes, with the formats Tune reads them in (JSON, pickles)."""
    experiment.mkdir(exist_ok=True)
    state = {"trial_data": [[json.dumps({"trial_id": f"t{i}"}), "{}"] for i in range(trials)], "runner_data": {}}
    (experiment / f"experiment_state-{SESSION}.json").write_text(json.dumps(state))
    (experiment / f"search_gen_state-{SESSION}.json").write_bytes(pickle.dumps({"trials": trials}))
    (experiment / f"searcher-state-{SESSION}.pkl").write_bytes(pickle.dumps(list(range(trials))))
    return saved_state_files(experiment)


def test_a_state_cut_short_is_replaced_by_the_kept_copy(tmp_path):
    experiment = tmp_path / "search"
    files = _save(experiment, trials=3)
    keeper = StateKeeper(str(experiment))
    keeper.keep()
    assert sorted(p.name for p in (experiment / KEPT_DIR).iterdir()) == sorted(p.name for p in files)
    complete = {p.name: p.read_bytes() for p in files}

    _save(experiment, trials=4)
    files[0].write_bytes(files[0].read_bytes()[:50])  # the disk filled during Tune's next save
    keeper.keep()  # a damaged set is never kept: the copy stays the complete one
    with log_lines() as messages:
        repair_saved_state(experiment)
    assert {p.name: p.read_bytes() for p in saved_state_files(experiment)} == complete
    (warning,) = messages
    assert warning.startswith(f"{files[0]}: JSONDecodeError")
    assert "resuming from its last complete copy" in warning

    with log_lines() as messages:
        repair_saved_state(experiment)  # a complete state is left alone, silently
    assert messages == []


def test_a_damaged_state_without_a_copy_is_refused_in_one_line(tmp_path):
    experiment = tmp_path / "search"
    files = _save(experiment, trials=2)
    files[2].write_bytes(b"")  # the searcher's state cut short
    with pytest.raises(FileFault) as caught:
        repair_saved_state(experiment)
    (line,) = caught.value.problems
    assert line.startswith(f"{files[2]}: EOFError")
    assert "no complete copy was kept" in line
