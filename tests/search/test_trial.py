"""The ray-train trial backend (TorchTrainer with 2 gloo workers inside a Tune trial) and the
resume of an interrupted search (SIGINT to the driver, then ``ofasearch resume``)."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml

from ofasearch.config import load_spec
from ofasearch.search.run import run_search
from tests.background import start_search, table_rows, wait_for
from tests.specs import MIXER, SPEC, TEACHER

pytestmark = pytest.mark.slow  # starts Ray or trains a model: not in the fast tier


def test_search_with_ray_train_trials(tmp_path, ray_local):
    spec = {
        **SPEC,
        "name": "ray-train-search",
        "pairs": [{"teacher": TEACHER, "student": MIXER}],
        "distill": {"eps": {"low": 1.0, "high": 1.5}},
        "optim": {**SPEC["optim"], "epochs": 2},
        "search": {"num_samples": 2, "grace_epochs": 2, "max_concurrent": 1, "baselines": False},
        "resources": {"workers_per_trial": 2, "cpus_per_worker": 1, "backend": "ray-train"},
        "storage": str(tmp_path / "results"),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    folder = run_search(load_spec(path))
    trials = pq.read_table(folder / "trials.parquet").to_pylist()
    assert len(trials) == 2
    assert all(t["backend"] == "ray-train" and t["status"] == "completed" and t["epochs"] == 2 for t in trials)
    epochs = pq.read_table(folder / "epochs.parquet").to_pylist()
    for t in trials:
        losses = [e["train_loss"] for e in sorted(epochs, key=lambda e: e["epoch"]) if e["trial_id"] == t["trial_id"]]
        assert len(losses) == 2 and losses[1] < losses[0], "DDP training reduces the loss"
    assert (folder / "best.yaml").is_file()
    assert len(list((folder / "train_runs").iterdir())) == 2, "one Ray Train run per trial, next to the Tune run"


def test_resume_of_an_interrupted_search(tmp_path):
    spec = {
        **SPEC,
        "name": "interrupted",
        "storage": str(tmp_path / "results"),
        "pairs": [{"teacher": TEACHER, "student": MIXER}],
        "search": {**SPEC["search"], "num_samples": 4, "max_concurrent": 1},
    }
    proc, folder = start_search(tmp_path, spec)

    def last_trial_started():  # Ctrl-C once every search trial has started: nothing left to schedule
        rows = [r for r in table_rows(folder) if r["role"] == "search"]
        return len(rows) == 4 and any(r["status"] in ("completed", "stopped") for r in rows)

    wait_for(proc, last_trial_started, "the last search trial started")
    # Like a crash, Ctrl-C keeps what Tune saved (every TUNE_STATE_PERIOD_S, 2 s): trials that
    # ended longer ago than that must survive it unchanged; later ones may run again.
    done_before = {r["trial_id"] for r in table_rows(folder) if r["status"] in ("completed", "stopped")}
    time.sleep(4)
    cli = [sys.executable, "-m", "ofasearch.cli"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, "Ctrl-C ends with 130 and says how to resume"
    rows = table_rows(folder)
    assert 1 <= len(done_before) < 4
    phase = json.loads((folder / "state.json").read_text())["phase"]
    assert phase in ("search", "baselines"), "interrupted, not run to the end"
    if phase == "search":  # the signal may land just after the last trial ended: then in baselines
        assert not [r for r in rows if r["role"] == "baseline"], "no phase starts after an interrupt"
    result = subprocess.run(
        [*cli, "resume", str(folder)], env=os.environ.copy(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = table_rows(folder)
    searched = [r for r in rows if r["role"] == "search" and r["status"] in ("completed", "stopped")]
    assert len(searched) == 4 and len({r["trial_id"] for r in rows}) == len(rows)
    assert done_before <= {r["trial_id"] for r in searched}, "finished trials are kept"
    assert sorted(r["method"] for r in rows if r["role"] == "baseline") == ["kd", "none"]
    assert (folder / "best.yaml").is_file()
