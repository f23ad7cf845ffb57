"""End-to-end search on scikit-learn's digits: real Ray Tune, Optuna TPE, ASHA, timm models."""

import json
import math
import re
import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import yaml

from ofasearch.cli import main
from ofasearch.search.claim import fresh_folder
from ofasearch.search.run import resume_search
from tests.helpers.logcapture import log_lines
from tests.helpers.specs import SPEC


def test_outputs_and_tables(digits_search):
    for name in ("trials.parquet", "epochs.parquet", "best.yaml", "spec.yaml", "search", "baselines"):
        assert (digits_search / name).exists(), name
    trials = pq.read_table(digits_search / "trials.parquet").to_pylist()
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
        (s, m) for s in ("MlpMixer", "vit_tiny") for m in ("none", "kd", "dkd", "dist")
    )
    assert all(b["status"] == "completed" and b["epochs"] == 3 for b in baselines)
    host = f"{socket.gethostname()} ("  # each trial's Ray node: host (ip, node <id>)
    assert all(t["node"].startswith(host) and "node " in t["node"] for t in trials), [t["node"] for t in trials]
    ids = [t["trial_id"] for t in trials]  # one format for every role: Tune's eight hex digits
    assert len(set(ids)) == len(ids), ids
    assert all(re.fullmatch(r"[0-9a-f]{8}", i) for i in ids), ids
    epochs = pq.read_table(digits_search / "epochs.parquet").to_pylist()
    assert {"trial_id", "epoch", "train_loss", "val_acc", "lr", "seconds"} <= set(epochs[0])
    assert len(epochs) == sum(t["epochs"] for t in trials)
    assert all(math.isfinite(e["val_acc"]) for e in epochs)
    assert list((digits_search / "search").rglob("events.out.tfevents*")), "TensorBoard events per trial"


def test_asha_stopped_trials_and_best_is_full_budget(digits_search):
    trials = pq.read_table(digits_search / "trials.parquet").to_pylist()
    search = [t for t in trials if t["role"] == "search"]
    stopped = [t for t in search if t["status"] == "stopped"]
    assert stopped
    assert all(t["epochs"] < 3 for t in stopped)
    # the best of everything that ran the full budget, baselines included, is what best.yaml holds
    completed = [t for t in trials if t["status"] == "completed" and t["role"] in ("search", "baseline")]
    best_line = (digits_search / "best.yaml").read_text().splitlines()[0]
    best = max(completed, key=lambda t: t["val_acc"])
    assert best["trial_id"] in best_line
    assert best["epochs"] == 3
    assert all(t["val_acc"] <= best["val_acc"] or t["status"] != "completed" for t in search)


def test_a_baseline_that_beats_every_searched_config_is_handed_over(digits_search, tmp_path, capsys):
    """On the digits search (6 short trials) DIST, a baseline, beats every searched config by far:
    best.yaml and export --rank 1 are its config, the summary's first line names it, and training
    best.yaml gives the same numbers (same seed)."""
    import yaml

    trials = pq.read_table(digits_search / "trials.parquet").to_pylist()
    completed = [t for t in trials if t["role"] in ("search", "baseline") and t["status"] == "completed"]
    best = max(completed, key=lambda t: t["val_acc"])
    assert best["role"] == "baseline", best
    assert best["method"] == "dist", best
    assert all(t["val_acc"] < best["val_acc"] for t in trials if t["role"] == "search")
    config = yaml.safe_load((digits_search / "best.yaml").read_text())
    assert config["distill"]["method"] == "dist"
    assert config["distill"]["stages"] == []
    assert (config["distill"]["kd_weight"], config["distill"]["dist_temperature"]) == (2.0, 4.0), "DIST's own setting"
    assert main(["export", str(digits_search), "--rank", "1", "-o", str(tmp_path / "rank1.yaml")]) == 0
    assert yaml.safe_load((tmp_path / "rank1.yaml").read_text()) | {"name": config["name"]} == config
    assert main(["status", str(digits_search)]) == 0
    assert f"best: dist (baseline {best['trial_id']}) val_acc {best['val_acc']:.4f}" in capsys.readouterr().out
    out = tmp_path / "best"
    assert main(["train", str(digits_search / "best.yaml"), "--output", str(out), "--no-progress"]) == 0
    assert (out / "student.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_acc"] == pytest.approx(best["val_acc"], abs=1e-9), "best.yaml reproduces the baseline"


def test_resume_of_a_finished_search_keeps_everything(digits_search, capsys):
    before = pq.read_table(digits_search / "trials.parquet").to_pylist()
    with log_lines() as lines:
        resume_search(digits_search)
    assert any("already finished" in line for line in lines), lines
    assert pq.read_table(digits_search / "trials.parquet").to_pylist() == before
    assert main(["status", str(digits_search)]) == 0
    assert "best: " in capsys.readouterr().out


def test_a_rerun_goes_next_to_an_earlier_search(digits_search, capsys):
    assert main(["run", str(digits_search / "spec.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "holds an earlier search" in out
    assert f"results would go to {digits_search}-2" in out
    assert main(["run", str(digits_search / "spec.yaml"), "--name", digits_search.name]) == 2
    assert "already holds a search; `ofasearch resume" in capsys.readouterr().err


def test_an_earlier_search_is_never_overwritten(digits_search):
    assert fresh_folder(digits_search.parent, digits_search.name) == digits_search.parent / f"{digits_search.name}-2"
    assert fresh_folder(digits_search.parent, "other") == digits_search.parent / "other"


@pytest.fixture(scope="module")
def second_run(tmp_path_factory, digits_search):
    """The digits search again, from the CLI's defaults (quiet progress view), probing the Ray
    dashboard while it runs; ``gpus_per_worker: auto``, which a cluster without GPUs makes 0."""
    import urllib.request

    import yaml

    from ofasearch.config import load_spec
    from ofasearch.search.run import run_search

    tmp = tmp_path_factory.mktemp("again")
    path = tmp / "spec.yaml"
    spec = {**SPEC, "resources": {"gpus_per_worker": "auto"}, "storage": str(tmp / "results")}
    path.write_text(yaml.safe_dump(spec))
    logs, probes = [], []

    def log(line: str) -> None:
        logs.append(line)
        if line.startswith("Ray dashboard: "):
            url = line.split()[2]
            token_file = Path.home() / ".ray" / "auth_token"  # what `ray get-auth-token` prints
            token = token_file.read_text().strip() if token_file.is_file() else ""
            for route, headers in (("/", {}), ("/api/version", {"Authorization": f"Bearer {token}"})):
                request = urllib.request.Request(url + route, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        probes.append((route, response.status, response.read(2000)))
                except urllib.error.HTTPError as exc:
                    probes.append((route, exc.code, b""))

    try:
        with log_lines(log):
            folder = run_search(load_spec(path), num_cpus=2)
    finally:
        ray.shutdown()
    return folder, logs, probes


def _outcomes(folder):
    searched = ["distill.eps", "distill.temperature", "distill.stages", "optim.lr"]
    rows = pq.read_table(folder / "trials.parquet").to_pylist()
    epochs = pq.read_table(folder / "epochs.parquet").to_pylist()
    curves = {
        r["trial_id"]: [
            e["val_acc"] for e in sorted(epochs, key=lambda e: e["epoch"]) if e["trial_id"] == r["trial_id"]
        ]
        for r in rows
    }
    return sorted(
        (
            r["role"],
            r["student"],
            r["method"],
            r["status"],
            r["seed"],
            *(str(r.get(k)) for k in searched),
            tuple(curves[r["trial_id"]]),
        )
        for r in rows
    )


def test_same_spec_and_seed_give_the_same_trials_and_metrics(digits_search, second_run):
    folder, logs, _probes = second_run
    ran = set(SPEC["search"]["baselines"])  # the shared search also ran DKD and DIST baselines
    assert _outcomes(folder) == [o for o in _outcomes(digits_search) if o[0] != "baseline" or o[2] in ran]
    # gpus_per_worker: auto on a cluster without GPUs: said once, trials on CPUs as with 0
    said = "resources.gpus_per_worker: auto -> 0 (the Ray cluster has no GPU: trials train on CPUs)"
    assert logs.count(said) == 1, [line for line in logs if "gpus_per_worker" in line]
    assert yaml.safe_load((folder / "spec.yaml").read_text())["resources"]["gpus_per_worker"] == "auto"
    assert yaml.safe_load((folder / "best.yaml").read_text())["resources"]["gpus_per_worker"] == 0


def test_progress_view_replaces_tunes_tables(second_run, capsys):
    _folder, logs, _probes = second_run
    assert any(line.startswith("[search] 6/6 ended") for line in logs), logs
    assert any(" stopped by ASHA after epoch " in line for line in logs)
    assert any(line.startswith("[baseline] 4/4 ended (4 completed)") for line in logs)
    assert any("left" in line for line in logs if line.startswith("[search] 1/6 ended"))


def test_dashboard_answers_during_the_run(second_run):
    _folder, _logs, probes = second_run
    (_, page_status, page), (_, api_status, version) = probes
    assert page_status == 200
    assert b"Ray Dashboard" in page
    assert api_status == 200
    assert json.loads(version)["ray_version"] == ray.__version__


def test_credentials_in_the_storage_and_mlflow_uris_are_used_but_never_written(s3_bucket, tmp_path, monkeypatch):
    """spec.yaml and state.json on the object store hold ``***`` where the URIs had credentials;
    the search itself (here stopped where Ray would start) is given the real ones."""
    import uuid

    import yaml

    from ofasearch.config import load_spec
    from ofasearch.search import run
    from ofasearch.search.tracking import mlflow_callback
    from ofasearch.utils.storage import as_location

    executed = {}

    def stop_before_ray(spec, space, folder, **kwargs):
        executed.update(spec=spec, folder=folder)
        return folder

    monkeypatch.setattr(run, "_execute", stop_before_ray)
    where = f"{s3_bucket.removeprefix('s3://')}/{uuid.uuid4().hex[:8]}"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "storage": f"s3://AKIA:s3cr3t@{where}"}))
    folder = run.run_search(load_spec(path), mlflow="https://alice:s3cr3t@mlflow.example:5000")

    assert executed["spec"].storage == f"s3://AKIA:s3cr3t@{where}", "the run uses the real URI"
    assert str(folder) == f"s3://{where}/{SPEC['name']}"
    spec_text, state_text = (folder / "spec.yaml").read_text(), (folder / "state.json").read_text()
    assert "s3cr3t" not in spec_text + state_text
    assert "AKIA" not in spec_text + state_text
    assert yaml.safe_load(spec_text)["storage"] == f"s3://***@{where}"
    state = json.loads(state_text)
    assert state["mlflow"] == "https://***@mlflow.example:5000"
    assert mlflow_callback(state["mlflow"], "x", "search").tracking_uri.startswith("https://alice:s3cr3t@")
    # run again from the spec.yaml it wrote: the credentials come from the environment (AWS_*)
    again = as_location(yaml.safe_load(spec_text)["storage"])
    assert (again / SPEC["name"] / "spec.yaml").read_text() == spec_text
