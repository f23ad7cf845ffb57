"""A driver killed with SIGKILL mid-search: `ofasearch resume` finishes it, keeps every finished
trial once, re-runs the unfinished ones, and stops the Ray processes the crash left behind."""

import json
import os
import shutil
import signal
import time

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from ofasearch.cluster.ray_session import local_ray_processes
from ofasearch.search.run import resume_search
from tests.background import start_search, table_rows, wait_for
from tests.logcapture import log_lines
from tests.rebuilt import assert_rebuild_matches
from tests.specs import MIXER, SPEC, TEACHER

pytestmark = pytest.mark.slow  # starts Ray or trains a model: not in the fast tier

NUM_SAMPLES = 6
ENDED = ("completed", "stopped", "diverged", "error")


def test_sigkill_then_resume_finishes_the_search(tmp_path):
    spec = {
        **SPEC,
        "name": "crash",
        "pairs": [{"teacher": TEACHER, "student": MIXER}],
        "search": {**SPEC["search"], "num_samples": NUM_SAMPLES},
        "storage": str(tmp_path / "results"),
    }
    driver, folder = start_search(tmp_path, spec)
    wait_for(driver, lambda: sum(r["status"] in ENDED for r in table_rows(folder)) >= 2, "two trials ended")
    # Tune saves its experiment state every TUNE_STATE_PERIOD_S (2 s): trials that ended longer
    # ago than that must survive the crash unchanged.
    kept = {r["trial_id"]: r for r in table_rows(folder) if r["status"] in ENDED}
    assert len(kept) >= 2
    time.sleep(4)
    seen_before_kill = table_rows(folder)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(2)
    _gcs, leftovers = local_ray_processes()
    leftover_pids = [p.pid for p in leftovers]

    try:
        with log_lines() as logs:
            resume_search(folder, verbose=0)
    finally:
        ray.shutdown()

    if leftover_pids:
        assert any("stale Ray process" in line for line in logs), logs
        assert not [p for p in leftover_pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    rows = table_rows(folder)
    search = [r for r in rows if r["role"] == "search"]
    assert len(search) == NUM_SAMPLES, "each trial once: none lost, none duplicated"
    assert len({r["trial_id"] for r in search}) == NUM_SAMPLES
    assert all(r["status"] in ENDED for r in rows)
    by_id = {r["trial_id"]: r for r in rows}
    for trial_id, before in kept.items():
        after = by_id[trial_id]
        assert (after["status"], after["epochs"], after["val_acc"]) == (
            before["status"],
            before["epochs"],
            before["val_acc"],
        )
    assert len(seen_before_kill) < len(rows), "the resume ran the trials the crash cut short"
    epochs = pq.read_table(folder / "epochs.parquet").to_pylist()
    for row in rows:
        assert sorted(e["epoch"] for e in epochs if e["trial_id"] == row["trial_id"]) == list(
            range(1, row["epochs"] + 1)
        )
    assert sorted(r["method"] for r in rows if r["role"] == "baseline") == ["kd", "none"]
    assert (folder / "best.yaml").is_file()
    assert os.path.getsize(folder / "trials.parquet") > 0
    assert_rebuild_matches(folder, tmp_path)  # Tune's folders after a kill and a resume hold the same rows


def test_a_kill_between_or_inside_grid_phases_resumes_every_point_once(digits_search, tmp_path):
    """The state a kill leaves at the search -> baselines hand-over or inside the baselines: phase
    `baselines`, Tune's baselines experiment without its saved state, two baselines finished, one
    cut short (`running`), one never started. Built by hand, so no timing decides the outcome."""
    folder = tmp_path / digits_search.name
    shutil.copytree(digits_search, folder)
    state = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps({**state, "phase": "baselines"}))
    for saved in (folder / "baselines").glob("experiment_state*.json"):
        saved.unlink()
    rows = pq.read_table(folder / "trials.parquet").to_pylist()
    baselines = sorted((r for r in rows if r["role"] == "baseline"), key=lambda r: r["trial_id"])
    kept, cut, lost = baselines[:2], baselines[2], baselines[3]
    cut = {**cut, "status": "running"}
    others = [r for r in rows if r["role"] != "baseline"]
    pq.write_table(pa.Table.from_pylist([*others, *kept, cut]), folder / "trials.parquet")
    epochs = [e for e in pq.read_table(folder / "epochs.parquet").to_pylist() if e["trial_id"] != lost["trial_id"]]
    pq.write_table(pa.Table.from_pylist(epochs), folder / "epochs.parquet")
    try:
        resume_search(folder, verbose=0)
    finally:
        ray.shutdown()
    after = pq.read_table(folder / "trials.parquet").to_pylist()
    again = [r for r in after if r["role"] == "baseline"]
    assert len(again) == len(baselines) == 8 and all(r["status"] == "completed" for r in again)
    assert sorted((r["student"], r["method"]) for r in again) == sorted((r["student"], r["method"]) for r in baselines)
    by_id = {r["trial_id"]: r for r in after}
    for row in kept:  # finished before the kill: kept as they were
        assert by_id[row["trial_id"]]["val_acc"] == row["val_acc"]
    assert cut["trial_id"] not in by_id and lost["trial_id"] not in by_id, "cut trials run again as new trials"
    assert [r for r in after if r["role"] == "search"] == [r for r in rows if r["role"] == "search"]
    assert json.loads((folder / "state.json").read_text())["phase"] == "done"
    epochs = pq.read_table(folder / "epochs.parquet").to_pylist()
    assert {e["trial_id"] for e in epochs} == {r["trial_id"] for r in after}, "no epochs of dropped trials"
