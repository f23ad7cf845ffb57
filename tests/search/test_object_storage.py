"""A search whose ``storage`` is an S3 URI (a real S3 API: moto's server on loopback): the Tune
experiments, the tables, ``best.yaml`` and the state all live in
the bucket, a killed search resumes from there, and it finds what the same search on disk finds.
(Ray Train runs in a bucket: tests/cluster/test_multinode.py.)"""

from __future__ import annotations

import re
import signal
import time
import uuid

import pytest
import yaml
from ray import tune

from ofasearch.cluster.ray_instances import recorded_sessions, session_processes
from ofasearch.cluster.ray_session import leave_ray
from ofasearch.config import load_spec
from ofasearch.search.run import run_search
from ofasearch.utils.killpoints import KILL_AT_VAR
from ofasearch.utils.storage import ObjectPath, as_location, ray_storage
from tests.helpers.background import run_driver, table_rows
from tests.helpers.specs import MIXER, SPEC, TEACHER

pytestmark = pytest.mark.slow  # starts Ray and trains

ENDED = ("completed", "stopped", "diverged", "error")
TINY = {
    **SPEC,
    "name": "tiny",
    "pairs": [{"teacher": TEACHER, "student": MIXER}],
    "optim": {**SPEC["optim"], "epochs": 2},
    "search": {**SPEC["search"], "num_samples": 3, "baselines": False},
}
SAME = ("trial_id", "status", "epochs", "val_acc", "config")  # what must not depend on the storage


def _run(tmp_path, storage: str, name: str):
    path = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump({**TINY, "name": name, "storage": storage}))
    spec = load_spec(path)
    start = time.perf_counter()
    folder = run_search(spec, num_cpus=2)
    return folder, time.perf_counter() - start


def test_a_search_on_s3_finds_what_it_finds_on_disk(tmp_path, s3_bucket):
    """The same seeded search on local storage, then in a bucket: the same trials and results.
    (The second run reuses the first one's teacher, logit cache and Ray: its time is mostly the
    bucket's.)"""
    prefix = f"{s3_bucket}/{uuid.uuid4().hex[:8]}"
    try:
        local, local_s = _run(tmp_path, str(tmp_path / "local"), "tiny")
        remote, remote_s = _run(tmp_path, prefix, "tiny")
    finally:
        leave_ray()
    print(f"\ntiny search (3 trials x 2 epochs): local {local_s:.1f} s (with set-up), s3 (moto) {remote_s:.1f} s")
    assert isinstance(remote, ObjectPath)
    assert str(remote) == f"{prefix}/tiny"
    rows = sorted(table_rows(remote), key=lambda r: r["config"])
    local_rows = sorted(table_rows(local), key=lambda r: r["config"])
    assert len(rows) == 3
    assert all(r["status"] in ENDED for r in rows)
    for key in ("status", "epochs", "val_acc", "config"):  # seeded, one trial at a time: the same search
        assert [r[key] for r in rows] == [r[key] for r in local_rows], key
    # the same winner, or one tied with it (a tie goes to the faster trial: timing, not storage)
    scores = {r["trial_id"]: r["val_acc"] for r in [*rows, *local_rows]}
    named = [re.search(r" ([0-9a-f]{8}) \(", (f / "best.yaml").read_text().splitlines()[0]) for f in (remote, local)]
    assert scores[named[0].group(1)] == scores[named[1].group(1)] == max(r["val_acc"] for r in rows)
    assert '"phase": "done"' in (remote / "state.json").read_text()
    path, fs = ray_storage(remote / "search")
    assert tune.Tuner.can_restore(path, storage_filesystem=fs)  # Tune's experiment is in the bucket
    assert (remote / "epochs.parquet").is_file()


def test_a_killed_s3_search_resumes_from_the_bucket(tmp_path, s3_bucket):
    spec = {
        **TINY,
        "name": "killed",
        "search": {**TINY["search"], "num_samples": 4},
        "resources": {"backend": "local"},
        "storage": f"{s3_bucket}/{uuid.uuid4().hex[:8]}",
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    folder = as_location(spec["storage"]) / spec["name"]
    # killed (as kill -9) right after the first search trial's row is written: mid-search by
    # construction (a search this small can end within a few seconds of its first trial)
    rc = run_driver(tmp_path, ["run", "spec.yaml", "--num-cpus", "2"], {KILL_AT_VAR: "search:1"})
    assert rc == -signal.SIGKILL, (tmp_path / "driver.log").read_text()[-3000:]
    kept = {r["trial_id"]: r for r in table_rows(folder) if r["status"] in ENDED}
    assert len(kept) == 1
    # resumed as a user would, in a new process: it joins the killed run's Ray and stops it at the end
    assert run_driver(tmp_path, ["resume", str(folder)]) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    assert not [r for r in recorded_sessions() if session_processes(r)], "no Ray instance left running"
    rows = {r["trial_id"]: r for r in table_rows(as_location(str(folder)))}
    assert len(rows) == 4
    assert all(r["status"] in ENDED for r in rows.values())
    for trial_id, row in kept.items():
        assert {k: rows[trial_id][k] for k in SAME} == {k: row[k] for k in SAME}
    assert '"phase": "done"' in (folder / "state.json").read_text()
