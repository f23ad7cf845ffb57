"""A search where some trials explode on purpose: they end `diverged`, the search goes on, ASHA and
Optuna see a finite value, and they never become the best config."""

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import yaml

from ofasearch.config import load_spec
from ofasearch.search import run as search_run
from ofasearch.search.run import run_search
from ofasearch.search.teacher_prep import ship_teachers
from tests.helpers.specs import MIXER, SPEC, TEACHER

pytestmark = pytest.mark.slow  # starts Ray or trains a model: not in the fast tier


def test_diverging_trials_are_recorded_and_never_best(tmp_path, ray_local):
    spec = {
        **SPEC,
        "name": "diverging",
        "pairs": [{"teacher": TEACHER, "student": MIXER}],
        "distill": {"eps": {"low": 1.0, "high": 1.5}},
        # lr 1e6 blows the weights up within a few steps: the loss turns inf/NaN
        "optim": {**SPEC["optim"], "lr": {"choices": [3.0e-3, 1.0e6]}, "epochs": 2, "clip_grad": 0.0},
        "search": {"num_samples": 4, "reduction_factor": 2, "max_concurrent": 1, "baselines": False},
        "storage": str(tmp_path / "results"),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    folder = run_search(load_spec(path))
    trials = pq.read_table(folder / "trials.parquet").to_pylist()
    assert len(trials) == 4, "the search went on after a trial diverged"
    diverged = [t for t in trials if t["status"] == "diverged"]
    assert diverged
    assert all(t["optim.lr"] == 1.0e6 for t in diverged)
    assert all("NaN" in t["error"] and t["val_acc"] == 0.0 for t in diverged)
    assert all(math.isfinite(e["val_acc"]) for e in pq.read_table(folder / "epochs.parquet").to_pylist())
    best = (folder / "best.yaml").read_text()
    assert "lr: 0.003" in best


def test_a_trial_that_raises_ends_in_error_and_the_search_goes_on(tmp_path, monkeypatch):
    """Pair 1's teacher-logit cache is truncated once the teachers are ready (damage after the
    driver checked it, before its bytes go to Ray's object store): its trials end `error` naming
    the file in trials.parquet, pair 0 carries on. (Damage after shipping is no error: a trial
    finds the original damaged and uses the verified copy from the object store.)"""
    # resnet10t (recipe as in the other tests) is already in the session's teacher store
    other = {"model": "resnet14t", "recipe": {"epochs": 1, "batch_size": 64}}  # only its cache matters
    spec = {
        **SPEC,
        "name": "raising",
        "pairs": [{"teacher": TEACHER, "student": MIXER}, {"teacher": other, "student": MIXER}],
        "distill": {"eps": {"low": 1.0, "high": 1.5}},
        "optim": {**SPEC["optim"], "epochs": 2},
        "search": {**SPEC["search"], "num_samples": 4, "baselines": False},
        "storage": str(tmp_path / "results"),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    folder = tmp_path / "results" / "raising"

    def damage_then_ship(teachers: list[dict]) -> dict:
        """The real shipping, of a pair-1 cache truncated after the driver verified it."""
        (Path(teachers[1]["cache"]["folder"]) / "logits.f16").write_bytes(b"")
        return ship_teachers(teachers)

    monkeypatch.setattr(search_run, "ship_teachers", damage_then_ship)
    try:
        run_search(load_spec(path), num_cpus=2)
    finally:
        ray.shutdown()
    trials = pq.read_table(folder / "trials.parquet").to_pylist()
    broken = [t for t in trials if t["teacher"] == "resnet14t" and t["method"] != "none"]
    assert broken
    assert all(t["status"] == "error" for t in broken)
    # the worker checks the cache before mapping it: the error names the file and what is wrong
    assert all("logits.f16: 0 bytes" in t["error"] and "truncated" in t["error"] for t in broken), broken[0]["error"]
    fine = [t for t in trials if t not in broken]
    assert fine
    assert all(t["status"] in ("completed", "stopped") for t in fine)
    assert len([t for t in trials if t["role"] == "search"]) == 4, "the search went on after the errors"
    assert "resnet10t" in (folder / "best.yaml").read_text()
