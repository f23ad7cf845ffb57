"""Resources a machine or cluster cannot give fail fast with exit 2 instead of hanging."""

import yaml

from ofasearch.cli import main
from tests.specs import MIXER, SPEC, TEACHER
from tests.test_train_job import CONFIG


def _write(tmp_path, data):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_gpu_asked_for_on_a_cpu_machine(tmp_path, capsys):
    data = {**CONFIG, "distill": {"method": "none"}, "optim": {**CONFIG["optim"], "epochs": 1}}
    assert main(["train", _write(tmp_path, data), "-o", str(tmp_path / "o"), "--gpus-per-worker", "1"]) == 2
    assert "gpus_per_worker: 1 asked for, but CUDA sees no GPU" in capsys.readouterr().err


def test_trial_bigger_than_the_cluster(tmp_path, capsys, ray_local):
    spec = {**SPEC, "name": "too-big", "pairs": [{"teacher": TEACHER, "student": MIXER}],
            "resources": {"workers_per_trial": 2, "cpus_per_worker": 4}, "storage": str(tmp_path / "r")}  # fmt: skip
    assert main(["run", _write(tmp_path, spec)]) == 2
    err = capsys.readouterr().err
    assert "resources.cpus_per_worker: 4 x 2 worker(s) needs 8 CPUs, but the Ray cluster has 2" in err


def test_train_workers_bigger_than_the_cluster(tmp_path, capsys, ray_local):
    data = {**CONFIG, "resources": {"cpus_per_worker": 3}}
    assert main(["train", _write(tmp_path, data), "-o", str(tmp_path / "o"), "--workers", "2"]) == 2
    assert "train.cpus_per_worker: 3 x 2 worker(s) needs 6 CPUs" in capsys.readouterr().err
