"""state.json survives a failing disk: every update keeps the state it replaces in state.json.bak,
and a state.json left empty or cut short is read from it."""

from __future__ import annotations

import json

from ofasearch.search.state import Phase, read_state, update_state
from tests.helpers.logcapture import log_lines


def test_the_previous_state_is_kept_and_a_truncated_state_falls_back_to_it(tmp_path):
    update_state(tmp_path, phase=Phase.TEACHERS, stages=[[4]])
    assert not (tmp_path / "state.json.bak").exists(), "nothing to keep before the first write"
    update_state(tmp_path, phase=Phase.SEARCH)
    assert json.loads((tmp_path / "state.json.bak").read_text()) == {"phase": "teachers", "stages": [[4]]}
    update_state(tmp_path, phase=Phase.CONFIRM)
    assert json.loads((tmp_path / "state.json.bak").read_text())["phase"] == "search"

    # power lost after the rename but before the data reached the disk: an empty (or cut) file
    for damage in ("", (tmp_path / "state.json").read_text()[:20]):
        (tmp_path / "state.json").write_text(damage)
        with log_lines() as logs:
            assert read_state(tmp_path) == {"phase": Phase.SEARCH, "stages": [[4]]}
        assert len(logs) == 1, logs
        assert "using state.json.bak" in logs[0], logs

    # the next update starts from the backup and keeps a good backup, never the damaged file
    update_state(tmp_path, phase=Phase.DONE)
    assert json.loads((tmp_path / "state.json").read_text()) == {"phase": "done", "stages": [[4]]}
    assert json.loads((tmp_path / "state.json.bak").read_text())["phase"] == "search"
