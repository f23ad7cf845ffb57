"""Starting, joining and leaving Ray: never a worker node stopped, never a shared instance
stopped under another driver, only a crashed ofasearch instance cleaned up; resources a machine
or cluster cannot give fail fast with exit 2 instead of hanging."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest
import ray
import yaml

from ofasearch.cli import main
from ofasearch.cluster.ray_session import (
    ADDRESS_FILE,
    INSTANCE_VAR,
    ensure_ray,
    leave_ray,
    prune_ray_sessions,
    ray_temp_dir,
    reap_dead_sessions,
    recorded_sessions,
    session_processes,
)
from tests.logcapture import log_lines
from tests.specs import CONFIG, MIXER, SPEC, TEACHER

RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]


def _write(tmp_path, data):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_gpu_asked_for_on_a_cpu_machine(tmp_path, capsys):
    data = {**CONFIG, "distill": {"method": "none"}, "optim": {**CONFIG["optim"], "epochs": 1}}
    assert main(["train", _write(tmp_path, data), "-o", str(tmp_path / "o"), "--gpus-per-worker", "1"]) == 2
    assert "--gpus-per-worker: 1 asked for, but CUDA sees no GPU" in capsys.readouterr().err


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


def test_only_the_newest_ended_session_folders_are_kept(tmp_path):
    names = [f"session_2026-11-2{d}_10-00-00_000000_{d}" for d in range(7)]
    for name in names:
        (tmp_path / name / "logs").mkdir(parents=True)
    (tmp_path / "session_unrelated").mkdir()  # not an ofasearch instance: never touched
    ended = [str(tmp_path / n) for n in reversed(names)]
    removed, kept = prune_ray_sessions(ended, keep=3)
    assert sorted(p.name for p in removed) == names[:4]
    assert [Path(k).name for k in kept] == names[4:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [*names[4:], "session_unrelated"]


def _this_instance() -> dict:
    """The record of the instance this process is connected to (ofasearch started it)."""
    session = ray.get_runtime_context().get_session_name()
    return next(r for r in recorded_sessions() if Path(r["session_dir"]).name == session)


def _wait_until_dead(pid: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still runs {timeout_s} s after SIGKILL")


@pytest.mark.slow
def test_a_crashed_instance_is_cleaned_up_and_a_live_one_never():
    ensure_ray(num_cpus=1)
    record = _this_instance()
    ray.shutdown()  # the driver is gone, as after a SIGKILL: the instance runs on
    procs = session_processes(record)
    names = {p.pid: p.name() for p in procs}  # read now: a stopped process has no name to ask for
    assert {"gcs_server", "raylet"} <= set(names.values()), names
    bystander = subprocess.Popen(["sleep", "60"])  # same user, not Ray's
    try:
        assert reap_dead_sessions() == [], "a live instance is never treated as left over"
        assert all(p.is_running() for p in procs)
        os.kill(record["gcs_pid"], signal.SIGKILL)  # the head crashes: its GCS is gone
        _wait_until_dead(record["gcs_pid"])  # a SIGKILL is delivered, not done, when kill() returns
        with log_lines() as logs:
            stopped = reap_dead_sessions()
        raylet = next(pid for pid, name in names.items() if name == "raylet")
        assert raylet in stopped
        assert session_processes(record) == []
        assert any("left by a crashed Ray instance that ofasearch started" in line for line in logs), logs
        assert record["session_dir"] not in [r["session_dir"] for r in recorded_sessions()]
        assert bystander.poll() is None, "a process that is not the instance's is never touched"
    finally:
        bystander.kill()
        bystander.wait()


SECOND_DRIVER = textwrap.dedent(
    """
    import logging, sys
    import ray
    from ofasearch.cluster.ray_session import ensure_ray, leave_ray
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    for name in ("ray", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ensure_ray(num_cpus=3)
    print("joined", flush=True)
    sys.stdin.readline()  # until the first driver has left

    @ray.remote
    def answer():
        return 42

    print("task returned", ray.get(answer.remote()), flush=True)
    leave_ray()
    """
)


@pytest.mark.slow
def test_a_driver_never_stops_an_instance_another_driver_uses():
    """Issue 17: the first run ended while a second one used its Ray and shut it down. Here the
    second driver joins and is registered (it says `joined` after ray.init returned) before the
    first leaves, so the outcome does not depend on timing."""
    ensure_ray(num_cpus=2)
    record = _this_instance()
    second = subprocess.Popen(
        [sys.executable, "-c", SECOND_DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        lines = []
        while not lines or lines[-1] != "joined":
            line = second.stdout.readline()
            assert line, f"the second driver ended before joining: {lines}"
            lines.append(line.strip())
        assert any(f"joining the local Ray instance ofasearch started at {record['address']}" in x for x in lines)
        assert any("--num-cpus 3 ignored: joining an existing Ray instance" in x for x in lines), lines
        with log_lines() as logs:
            leave_ray()
        assert any("leaving the local Ray instance running: 1 other driver(s) use it" in x for x in logs), logs
        assert {"gcs_server", "raylet"} <= {p.name() for p in session_processes(record)}
        out, _ = second.communicate("go\n", timeout=120)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, out
    assert "task returned 42" in out, "the second driver still works after the first left"
    assert "stopped the local Ray instance ofasearch started" in out, "the last driver to leave stops it"
    assert session_processes(record) == []
    assert record["session_dir"] not in [r["session_dir"] for r in recorded_sessions()]


def _pid_namespace_prefix() -> list[str]:
    """``unshare`` into a new PID namespace with its own /proc (a user namespace too when not
    root), or skip: without one the driver would see the head's GCS."""
    if shutil.which("unshare") is None:
        pytest.skip("needs `unshare` (util-linux) to hide the head from the worker node's processes")
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"]
    if os.geteuid() != 0:
        prefix[1:1] = ["--user", "--map-root-user"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a PID namespace here (`{' '.join(prefix)} true`: {probe.stderr.strip()})")
    return prefix


WORKER_NODE_DRIVER = textwrap.dedent(
    """
    import json, logging, sys
    import psutil, ray
    from ofasearch.cluster.ray_session import ensure_ray, leave_ray
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    # names kept now: psutil reuses these Process objects (and their .info) in later scans
    seen = [(p, p.info["name"]) for p in psutil.process_iter(["name"]) if p.info["name"] in ("raylet", "gcs_server")]
    raylets = [p for p, name in seen if name == "raylet"]
    ensure_ray(num_cpus=8)

    @ray.remote
    def answer():
        return 42

    joined = {"nodes": sum(n["Alive"] for n in ray.nodes()), "cpus": ray.cluster_resources().get("CPU"),
              "task": ray.get(answer.remote())}
    leave_ray()
    print(json.dumps({**joined, "visible": sorted(name for _, name in seen),
                      "raylet_alive": bool(raylets) and all(p.is_running() for p in raylets)}))
    """
)


@pytest.mark.slow
def test_a_worker_node_whose_head_is_invisible_is_joined_not_stopped(tmp_path):
    """Issue 13: on a worker node (raylet and agents, the GCS on the head elsewhere) a run used to
    take the node for a crash's leftovers and kill it. The head runs outside a PID namespace; the
    worker node and the driver inside it, where no gcs_server is visible."""
    prefix = _pid_namespace_prefix()
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    head_mark = {"mark": uuid.uuid4().hex, "started_at": time.time()}  # to stop the head afterwards
    env = {**os.environ, INSTANCE_VAR: head_mark["mark"]}
    head = [*RAY_CLI, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"]
    log = tmp_path / "head.log"  # not a pipe: the head's processes would hold it open
    with log.open("w") as out:
        started = subprocess.run(
            [*head, "--disable-usage-stats"], env=env, start_new_session=True, stdout=out, stderr=out
        )
    try:
        assert started.returncode == 0, log.read_text()
        address = (ray_temp_dir() / ADDRESS_FILE).read_text().strip()
        assert address.endswith(f":{port}")
        worker = " ".join([*RAY_CLI, "start", f"--address={address}", "--num-cpus=1", "--disable-usage-stats"])
        script = tmp_path / "driver.py"
        script.write_text(WORKER_NODE_DRIVER)
        inside = f"{worker} >/dev/null 2>&1 && {sys.executable} {script}"
        run = subprocess.run([*prefix, "sh", "-c", inside], capture_output=True, text=True, timeout=240)
        assert run.returncode == 0, run.stderr[-3000:]
        seen = json.loads(run.stdout.strip().splitlines()[-1])
    finally:
        for proc in session_processes(head_mark):
            proc.kill()
        try:
            if (ray_temp_dir() / ADDRESS_FILE).read_text().strip().endswith(f":{port}"):
                (ray_temp_dir() / ADDRESS_FILE).unlink()  # no later ray.init() may try the dead head
        except OSError:
            pass
    assert seen["visible"] == ["raylet"], "inside the namespace the worker node's raylet is all there is"
    assert seen["raylet_alive"], "the worker node was stopped"
    assert seen["nodes"] == 2 and seen["cpus"] == 2, "the driver joined the cluster (head + worker node)"
    assert seen["task"] == 42
    assert f"joining the Ray instance at {address}" in run.stderr
    assert "--num-cpus 8 ignored" in run.stderr
