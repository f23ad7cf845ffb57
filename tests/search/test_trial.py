"""The ray-train trial backend (TorchTrainer with 2 gloo workers inside a Tune trial). The resume
of an interrupted search (SIGINT to the driver, then ``ofasearch resume``) is in tests/test_faults.py."""

import pyarrow.parquet as pq
import pytest
import yaml

from ofasearch.config import load_spec
from ofasearch.search.run import run_search
from tests.helpers.specs import MIXER, SPEC, TEACHER

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
        assert len(losses) == 2, "DDP training reduces the loss"
        assert losses[1] < losses[0], "DDP training reduces the loss"
    assert (folder / "best.yaml").is_file()
    assert len(list((folder / "train_runs").iterdir())) == 2, "one Ray Train run per trial, next to the Tune run"
