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
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest
import ray
import yaml

from ofasearch.cli import main
from ofasearch.cluster import ray_instances, ray_session
from ofasearch.cluster.ray_instances import (
    ADDRESS_FILE,
    INSTANCE_VAR,
    KEEP_SESSIONS,
    RECORDS_FILE,
    is_ray_process,
    prune_ray_sessions,
    ray_temp_dir,
    reap_dead_sessions,
    recorded_sessions,
    records_dir,
    session_processes,
)
from ofasearch.cluster.ray_session import ensure_ray, leave_ray
from ofasearch.errors import FileFault
from tests.helpers.logcapture import log_lines
from tests.helpers.specs import CONFIG, MIXER, SPEC, TEACHER

RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]


def _write(tmp_path, data):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_the_gcs_port_is_never_one_ray_claims_for_another_component():
    """The OS's ephemeral ports include 52365, the dashboard agent's default: a GCS started there
    made `ray start --head` refuse ("trying to use a port number 52365 that is used by other
    components"). The ports avoided are Ray's own defaults."""
    from ray._private import ray_constants

    defaults = {
        ray_constants.DEFAULT_PORT,
        ray_constants.DEFAULT_DASHBOARD_PORT,
        ray_constants.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT,
    }
    assert defaults <= ray_session.RAY_DEFAULT_PORTS
    for _ in range(50):
        port = ray_session._free_port()
        assert port not in ray_session.RAY_DEFAULT_PORTS
        assert port not in ray_session.RAY_WORKER_PORTS


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
    removed, kept = prune_ray_sessions(ended, keep=3, root=tmp_path)
    assert sorted(p.name for p in removed) == names[:4]
    assert [Path(k).name for k in kept] == names[4:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [*names[4:], "session_unrelated"]


def test_records_naming_anything_but_rays_session_folders_delete_nothing(tmp_path):
    """A record names folders to delete: only ``session_*`` folders directly under Ray's temp
    dir ever are; anything else is forgotten with a warning and left as it is."""
    root = tmp_path / "ray"
    sessions = [root / f"session_2026-11-2{d}_10-00-00_000000_{d}" for d in range(3)]
    for folder in sessions:
        folder.mkdir(parents=True)
    (tmp_path / "home" / "session_data").mkdir(parents=True)  # right name, wrong place
    (root / "logs").mkdir()  # right place, not a session
    (root / "session_link").symlink_to(tmp_path / "home")  # a link to a folder elsewhere
    foreign = [tmp_path / "home" / "session_data", root / "logs", root / "session_link", root / "sub" / ".." / "logs"]
    with log_lines() as logs:
        removed, kept = prune_ray_sessions([str(p) for p in [*sessions, *foreign]], keep=1, root=root)
    assert removed == sessions[:2]
    assert kept == [str(sessions[2])]
    assert (tmp_path / "home" / "session_data").is_dir()
    assert (root / "logs").is_dir()
    assert (root / "session_link").is_symlink()
    assert (tmp_path / "home").is_dir()
    assert sum("not a Ray session folder" in line for line in logs) == len(foreign), logs


def test_only_rays_command_lines_count_as_its_processes():
    package = Path(ray.__file__).parent
    assert is_ray_process(["ray::IDLE"])
    assert is_ray_process([str(package / "core/src/ray/raylet/raylet"), "--x=1"])
    assert is_ray_process([sys.executable, "-u", str(package / "dashboard" / "agent.py"), "--node-ip-address=x"])
    assert is_ray_process([sys.executable, "-m", "ray.util.client.server", "--port=10001"]), "Ray Client's server"
    assert not is_ray_process([sys.executable, "-m", "rayon.server"])
    assert not is_ray_process([sys.executable, "-m", "mytool", "ray.util.client.server"])
    assert not is_ray_process(["sleep", "60"])
    assert not is_ray_process(["bash", "-c", "ray start"])
    assert not is_ray_process([str(package.parent / "ray-evil" / "x.py")]), "a sibling folder is not Ray's"


@pytest.fixture
def records_here(tmp_path, monkeypatch):
    """This test's own temp dir (where the records folder goes) and Ray temp dir; the per-user
    lock is made afresh in it and forgotten afterwards."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(ray_instances, "_lock", None)
    for module in (ray_instances, ray_session):  # both look up Ray's temp dir
        monkeypatch.setattr(module, "ray_temp_dir", lambda: tmp_path / "ray")
    return tmp_path


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def _planted_records(tmp_path: Path, bystander_mark: str) -> dict:
    """Records naming a crashed instance whose only marked process is a harmless ``sleep``, and
    more ended session folders than are kept, under this test's Ray temp dir and elsewhere."""
    ended = []
    for d in range(KEEP_SESSIONS + 2):
        for where in (tmp_path / "ray", tmp_path / "elsewhere"):
            (where / f"session_2026-11-2{d}_10-00-00_000000_{d}").mkdir(parents=True)
            ended.append(str(where / f"session_2026-11-2{d}_10-00-00_000000_{d}"))
    record = {
        "host": socket.gethostname(),
        "pidns": os.readlink("/proc/self/ns/pid"),
        "mark": bystander_mark,
        "started_at": time.time() - 5,
        "address": "127.0.0.1:1",
        "session_dir": str(tmp_path / "ray" / "session_2026-11-29_10-00-00_000000_9"),
        "gcs_pid": _dead_pid(),
        "gcs_created": 0.0,
    }
    return {"live": [record], "ended": ended}


def _sleeping(mark: str) -> subprocess.Popen:
    """A process of this user that inherited an instance's mark but is not Ray's."""
    return subprocess.Popen(["sleep", "60"], env={**os.environ, INSTANCE_VAR: mark})


def _session_folders(tmp_path: Path) -> list[str]:
    return sorted(str(p) for p in tmp_path.glob("*/session_*"))


def test_a_harmless_process_named_in_a_record_survives(records_here):
    mark = uuid.uuid4().hex
    records = _planted_records(records_here, mark)
    folder = records_dir()
    assert folder == records_here / "tmp" / f"ofasearch-{os.getuid()}"
    (folder / RECORDS_FILE).write_text(json.dumps(records))
    bystander = _sleeping(mark)
    try:
        assert session_processes(records["live"][0]) == []
        assert reap_dead_sessions() == []
        assert bystander.poll() is None, "a process that is not Ray's is never signalled"
    finally:
        bystander.kill()
        bystander.wait()
    assert recorded_sessions() == [], "the crashed instance is forgotten"
    # the newest 5 of Ray's: the crashed one (_9, its folder gone already) and _6 to _3
    ours = sorted(p for p in records["ended"] if p.startswith(str(records_here / "ray")))
    elsewhere = sorted(p for p in records["ended"] if p.startswith(str(records_here / "elsewhere")))
    assert _session_folders(records_here) == sorted([*ours[3:], *elsewhere]), "nothing outside Ray's temp dir"


@pytest.mark.parametrize("how", ["open to others", "symlink"])
def test_a_planted_records_folder_is_refused_and_nothing_read_stopped_or_deleted(records_here, how):
    mark = uuid.uuid4().hex
    records = _planted_records(records_here, mark)
    folder = records_here / "tmp" / f"ofasearch-{os.getuid()}"
    if how == "symlink":
        target = records_here / "planted"
        target.mkdir(mode=0o700)
        folder.symlink_to(target)
    else:
        folder.mkdir()
        folder.chmod(0o777)
    (folder / RECORDS_FILE).write_text(json.dumps(records))
    before = (folder / RECORDS_FILE).read_bytes()
    folders = _session_folders(records_here)
    bystander = _sleeping(mark)
    try:
        with pytest.raises(FileFault) as exc:
            reap_dead_sessions()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    assert len(exc.value.problems) == 1
    assert exc.value.problems[0].startswith(f"{folder}: ")
    what = "a symbolic link, not a folder" if how == "symlink" else "mode 0777, open to other users"
    assert what in exc.value.problems[0]
    assert (folder / RECORDS_FILE).read_bytes() == before
    assert not (folder / "ray.lock").exists()
    assert _session_folders(records_here) == folders, "nothing deleted"


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
    """The first run ended while a second one used its Ray and shut it down. Here the
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
        running = session_processes(record)
        assert {"gcs_server", "raylet"} <= {p.name() for p in running}
        assert any("ray.util.client.server" in p.cmdline() for p in running), "Ray Client's server is the instance's"
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
    """On a worker node (raylet and agents, the GCS on the head elsewhere) a run used to
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
    assert seen["nodes"] == 2, "the driver joined the cluster (head + worker node)"
    assert seen["cpus"] == 2, "the driver joined the cluster (head + worker node)"
    assert seen["task"] == 42
    assert f"joining the Ray instance at {address}" in run.stderr
    assert "--num-cpus 8 ignored" in run.stderr


def test_a_process_that_connects_again_and_again_leaves_without_waiting():
    """A process that starts and leaves a local Ray four times (a notebook running searches one
    after another): each leave is over in seconds (a stop waits at most 3 s for Ray's processes);
    with Ray 2.60's defaults the third and fourth waited 10-30 s for the driver's metric exports
    to the instances it had left. Only the driver's own
    export is switched off, from its second connection on: the instance's processes (trials)
    keep Ray's default, and so does the driver's environment after each connection."""
    script = textwrap.dedent(
        """
        import json, os, time
        import ray
        from ofasearch.cluster.ray_session import METRICS_VAR, ray_session

        @ray.remote
        def worker_setting():
            return os.environ.get(METRICS_VAR)

        rounds = []
        for _ in range(4):
            with ray_session(num_cpus=1):
                in_worker = ray.get(worker_setting.remote())
                start = time.monotonic()
            rounds.append([in_worker, os.environ.get(METRICS_VAR), time.monotonic() - start])
        print(json.dumps(rounds))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rounds = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r[:2] for r in rounds] == [[None, None]] * 4, rounds
    assert max(r[2] for r in rounds) < 8, f"a leave waited: {rounds}"
