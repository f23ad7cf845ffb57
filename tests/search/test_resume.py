"""A driver killed with SIGKILL mid-search: `ofasearch resume` finishes it, keeps every finished
trial once, re-runs the unfinished ones, and stops the Ray processes the crash left behind."""

import os
import signal
import time

import psutil
import pyarrow.parquet as pq
import ray

from ofasearch.cluster.ray_session import local_ray_processes
from ofasearch.search.run import resume_search
from tests.background import start_search, table_rows, wait_for
from tests.logcapture import log_lines
from tests.specs import MIXER, SPEC, TEACHER

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
