"""End-to-end search on scikit-learn's digits: real Ray Tune, Optuna TPE, ASHA, timm models."""

import copy
import math

import pyarrow.parquet as pq
import pytest
import yaml
from optuna.trial import TrialState

from ofasearch.cli import main
from ofasearch.search import _searcher, fresh_folder, resume_search, run_search
from ofasearch.space import SearchSpace
from ofasearch.spec import load_spec, parse_spec

VIT = {"model": "vit_tiny_patch16_224", "kwargs": {"patch_size": 4, "embed_dim": 48, "depth": 4, "num_heads": 2}}
MIXER = {"model": "MlpMixer", "kwargs": {"patch_size": 4, "num_blocks": 2, "embed_dim": 48}}
TEACHER = {"model": "resnet10t", "recipe": {"epochs": 4, "batch_size": 64}}
SPEC = {
    "name": "digits-search",
    "seed": 0,
    "data": {"dataset": "digits", "image_size": 16},
    "pairs": [{"teacher": TEACHER, "student": VIT}, {"teacher": TEACHER, "student": MIXER}],
    "distill": {
        "stages": {"choices": [[1, 2, 3, 4], [3, 4], [4]]},
        "eps": {"low": 1.0, "high": 1.5},
        "temperature": {"low": 1.0, "high": 3.0},
    },
    "optim": {"lr": {"low": 1e-3, "high": 5e-3, "log": True}, "epochs": 3, "batch_size": 64},
    # one trial at a time: ASHA sees results in a fixed order, so its decisions are reproducible
    "search": {"num_samples": 6, "grace_epochs": 1, "reduction_factor": 2, "max_concurrent": 1},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    import ray

    tmp = tmp_path_factory.mktemp("search")
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "storage": str(tmp / "results")}))
    folder = run_search(load_spec(path), num_cpus=2, log=lambda _m: None)
    yield folder
    ray.shutdown()


def test_outputs_and_tables(finished):
    for name in ("trials.parquet", "epochs.parquet", "best.yaml", "spec.yaml", "search", "baselines"):
        assert (finished / name).exists(), name
    trials = pq.read_table(finished / "trials.parquet").to_pylist()
    columns = set(trials[0])
    assert {
        "trial_id",
        "role",
        "status",
        "teacher",
        "student",
        "method",
        "val_acc",
        "val_acc_last",
        "epochs",
        "seconds",
        "error",
        "seed",
    } <= columns
    assert {"distill.eps", "distill.temperature", "distill.stages", "optim.lr"} <= columns
    search = [t for t in trials if t["role"] == "search"]
    baselines = [t for t in trials if t["role"] == "baseline"]
    assert len(search) == 6
    assert sorted((b["student"][:8], b["method"]) for b in baselines) == sorted(
        (s, m) for s in ("MlpMixer", "vit_tiny") for m in ("kd", "none")
    )
    assert all(b["status"] == "completed" and b["epochs"] == 3 for b in baselines)
    epochs = pq.read_table(finished / "epochs.parquet").to_pylist()
    assert {"trial_id", "epoch", "train_loss", "val_acc", "lr", "seconds"} <= set(epochs[0])
    assert len(epochs) == sum(t["epochs"] for t in trials)
    assert all(math.isfinite(e["val_acc"]) for e in epochs)
    assert list((finished / "search").rglob("events.out.tfevents*")), "TensorBoard events per trial"


def test_asha_stopped_trials_and_best_is_full_budget(finished):
    trials = pq.read_table(finished / "trials.parquet").to_pylist()
    search = [t for t in trials if t["role"] == "search"]
    stopped = [t for t in search if t["status"] == "stopped"]
    assert stopped and all(t["epochs"] < 3 for t in stopped)
    completed = [t for t in search if t["status"] == "completed"]
    best_line = (finished / "best.yaml").read_text().splitlines()[0]
    best = max(completed, key=lambda t: t["val_acc"])
    assert best["trial_id"] in best_line and best["epochs"] == 3
    assert all(t["val_acc"] <= best["val_acc"] or t["status"] != "completed" for t in search)


def test_best_yaml_trains(finished, tmp_path):
    out = tmp_path / "best"
    assert main(["train", str(finished / "best.yaml"), "--output", str(out), "--no-progress"]) == 0
    assert (out / "student.safetensors").is_file()


def test_resume_of_a_finished_search_keeps_everything(finished, capsys):
    before = pq.read_table(finished / "trials.parquet").to_pylist()
    resume_search(finished)
    assert "already finished" in capsys.readouterr().out
    assert pq.read_table(finished / "trials.parquet").to_pylist() == before
    assert main(["status", str(finished)]) == 0
    assert "best full-budget search trial" in capsys.readouterr().out


def test_an_earlier_search_is_never_overwritten(finished):
    assert fresh_folder(finished.parent, finished.name) == finished.parent / f"{finished.name}-2"
    assert fresh_folder(finished.parent, "other") == finished.parent / "other"


def test_optuna_is_told_pruned_for_asha_stopped_trials():
    spec = parse_spec(copy.deepcopy(SPEC))
    searcher = _searcher(SearchSpace(spec, [[1, 2, 3, 4], [3, 4]]), spec)
    for trial_id, epochs in (("stopped", 1), ("full", 3)):
        searcher.suggest(trial_id)
        for epoch in range(1, epochs + 1):
            result = {"val_acc": 0.1 * epoch, "epoch": epoch, "training_iteration": epoch}
            searcher.on_trial_result(trial_id, result)
        searcher.on_trial_complete(trial_id, result)
    states = [t.state for t in searcher._ot_study.trials]
    assert states == [TrialState.PRUNED, TrialState.COMPLETE]
    assert searcher._ot_study.trials[0].intermediate_values == {1: pytest.approx(0.1)}
    assert searcher._ot_study.best_value == pytest.approx(0.3)
