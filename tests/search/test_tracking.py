"""--mlflow: every trial of a real tiny search (Ray Tune, Optuna, timm on digits) reaches an MLflow
file store through Ray's MLflowLoggerCallback, read back with MLflow's own client."""

import copy
import os
import sys

import pytest
import yaml

from ofasearch.cli import main
from ofasearch.results.tables import EPOCHS_FILE, TRIALS_FILE, read_rows
from ofasearch.search import tracking
from ofasearch.search.tracking import mlflow_callback
from tests.helpers.logcapture import log_lines
from tests.helpers.specs import SPEC


def _spec_file(tmp_path, **search):
    spec = copy.deepcopy(SPEC)
    spec["pairs"] = [
        {**pair, "teacher": {**pair["teacher"], "recipe": {"epochs": 1, "batch_size": 64}}} for pair in spec["pairs"]
    ]
    spec["search"] = {**spec["search"], "num_samples": 2, "baselines": ["none"], **search}
    spec["optim"] = {**spec["optim"], "epochs": 2}
    spec["storage"] = str(tmp_path / "results")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_without_mlflow_the_flag_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: importlib finds no spec
    path = _spec_file(tmp_path)
    for args in (["run", str(path)], ["resume", str(tmp_path / "results" / "x")]):
        assert main([*args, "--mlflow", "file:///tmp/mlruns"]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line == "error: --mlflow file:///tmp/mlruns: MLflow is not installed; pip install 'ofasearch[mlflow]'"
    assert not (tmp_path / "results").exists(), "nothing started"


@pytest.mark.slow
def test_every_trial_is_an_mlflow_run_with_params_and_per_epoch_metrics(tmp_path, capsys, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    store = (tmp_path / "mlruns").as_uri()
    # the ViT (115,354 params) is dropped by the constraint: one pair, 2 search trials + 1 baseline
    path = _spec_file(tmp_path, constraints={"max_params": 60_000})
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert main(["run", str(path), "--num-cpus", "2", "--mlflow", store]) == 0
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ, "set around the Tuner calls only"
    folder = tmp_path / "results" / "digits-search"
    saved = yaml.safe_load((folder / "spec.yaml").read_text())
    assert [pair["student"]["model"] for pair in saved["pairs"]] == ["MlpMixer"], "the dropped pair is not searched"

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.7+ asks for it to read a file store
    client = mlflow.tracking.MlflowClient(store)
    experiment = client.get_experiment_by_name("digits-search")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    trials = read_rows(folder / TRIALS_FILE)
    assert len(runs) == len(trials) == 3
    epochs = read_rows(folder / EPOCHS_FILE)
    for row in trials:
        (run,) = [run for name, run in runs.items() if name.endswith(row["trial_id"])]
        assert run.info.status == "FINISHED"
        role = row["role"]
        assert run.data.tags["ofasearch.role"] == role
        prefix = "point/" if role == "baseline" else ""
        if role == "baseline":  # its method reads no eps: its row leaves it empty, its point has the pair's
            assert row["distill.eps"] is None
            assert f"{prefix}distill.eps" in run.data.params
        else:
            assert float(run.data.params[f"{prefix}distill.eps"]) == pytest.approx(row["distill.eps"])
        assert float(run.data.params[f"{prefix}optim.lr"]) == pytest.approx(row["optim.lr"])
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_acc"))
        recorded = sorted((e["epoch"], e["val_acc"]) for e in epochs if e["trial_id"] == row["trial_id"])
        assert [step for step, _ in history] == [1, 2] == [epoch for epoch, _ in recorded]
        assert [v for _, v in history] == pytest.approx([v for _, v in recorded])


def test_an_mlflow_uri_is_recorded_without_credentials_and_used_with_them(monkeypatch):
    monkeypatch.setattr(tracking, "_real_uris", {})
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    recorded = tracking.recorded_tracking_uri("https://alice:s3cr3t@mlflow.example:5000")
    assert recorded == "https://***@mlflow.example:5000"
    # the run that was given the URI logs with its credentials
    assert mlflow_callback(recorded, "x", "search").tracking_uri == "https://alice:s3cr3t@mlflow.example:5000"
    # a resume in another process: the environment's credentials, as MLflow reads them, and a warning
    monkeypatch.setattr(tracking, "_real_uris", {})
    with log_lines() as logs:
        assert mlflow_callback(recorded, "x", "search").tracking_uri == "https://mlflow.example:5000"
    assert len(logs) == 1
    assert "MLFLOW_TRACKING_USERNAME" in logs[0]
    assert "s3cr3t" not in logs[0]
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t")
    with log_lines() as logs:
        mlflow_callback(recorded, "x", "search")
    assert logs == []
    assert tracking.recorded_tracking_uri("/tmp/mlruns") == "file:///tmp/mlruns"
