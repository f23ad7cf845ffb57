"""Resources a machine or cluster cannot give fail fast with exit 2 instead of hanging."""

import yaml

from ofasearch.cli import main
from ofasearch.cluster.ray_session import local_ray_processes, prune_ray_sessions, stop_stale_ray
from tests.specs import CONFIG, MIXER, SPEC, TEACHER


def _write(tmp_path, data):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_gpu_asked_for_on_a_cpu_machine(tmp_path, capsys):
    data = {**CONFIG, "distill": {"method": "none"}, "optim": {**CONFIG["optim"], "epochs": 1}}
    assert main(["train", _write(tmp_path, data), "-o", str(tmp_path / "o"), "--gpus-per-worker", "1"]) == 2
    assert "gpus_per_worker: 1 asked for, but CUDA sees no GPU" in capsys.readouterr().err


def test_trial_bigger_than_the_cluster(tmp_path, capsys, ray_local):
    spec = {
        **SPEC,
        "name": "too-big",
        "pairs": [{"teacher": TEACHER, "student": MIXER}],
        "resources": {"workers_per_trial": 2, "cpus_per_worker": 4},
        "storage": str(tmp_path / "r"),
    }
    assert main(["run", _write(tmp_path, spec)]) == 2
    err = capsys.readouterr().err
    assert "resources.cpus_per_worker: 4 x 2 worker(s) needs 8 CPUs, but the Ray cluster has 2" in err


def test_train_workers_bigger_than_the_cluster(tmp_path, capsys, ray_local):
    data = {**CONFIG, "resources": {"cpus_per_worker": 3}}
    assert main(["train", _write(tmp_path, data), "-o", str(tmp_path / "o"), "--workers", "2"]) == 2
    assert "train.cpus_per_worker: 3 x 2 worker(s) needs 6 CPUs" in capsys.readouterr().err


def test_old_ray_session_folders_are_pruned(tmp_path):
    names = [f"session_2026-11-2{d}_10-00-00_000000_{d}" for d in range(7)]
    for name in names:
        (tmp_path / name / "logs").mkdir(parents=True)
    (tmp_path / "session_latest").symlink_to(tmp_path / names[1])  # an old one still marked latest
    removed = prune_ray_sessions(keep=3, root=tmp_path)
    assert sorted(p.name for p in removed) == [names[0], names[2], names[3]]
    left = sorted(p.name for p in tmp_path.glob("session_2*"))
    assert left == [names[1], *names[4:]]
    assert (tmp_path / "session_latest").resolve() == tmp_path / names[1]


def test_no_stale_processes_while_a_ray_runs(ray_local):
    gcs, others = local_ray_processes()
    assert gcs and others, "a live local Ray has a GCS and workers/agents"
    assert stop_stale_ray() == [], "a live instance is never treated as stale"
    assert all(p.is_running() for p in others)
