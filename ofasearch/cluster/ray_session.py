"""Starting, joining and leaving Ray without ever stopping a Ray that is not ours to stop.

Which Ray a driver uses follows Ray's own discovery: ``--address``, else ``$RAY_ADDRESS``, else
the instance ``ray start`` last started or joined on this host (Ray's ``ray_current_cluster``
file: a head, or a worker node of a cluster whose head runs elsewhere), else a new local
instance. ofasearch starts that one with ``ray start --head`` in a process group of its own, so
it outlives the driver that started it (another run may have joined it), and records it in a
per-user file. Leaving, a driver stops the instance only when ofasearch started it and no other
driver is connected; otherwise it leaves it running and says so (the last ofasearch driver to
leave stops it). After a crash only the processes of a recorded session whose GCS is gone are
stopped: never a ``ray start``-ed instance, a worker node, or another user's processes. Start,
join and leave hold one per-user lock, so a run that joins is either seen by a leaving one or
finds the instance gone and starts its own.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock
from ray.train import FailureConfig

from ofasearch.utils.files import atomic_write, user_temp_dir
from ofasearch.utils.killpoints import kill_point

__all__ = [
    "PREEMPTION_RETRIES",
    "check_fits",
    "ensure_ray",
    "is_ray_process",
    "leave_ray",
    "other_drivers",
    "prune_ray_sessions",
    "ray_session",
    "reap_dead_sessions",
    "recorded_sessions",
    "session_processes",
    "stop_abandoned_instances",
    "train_failure_config",
]

logger = logging.getLogger(__name__)

# Ray Train re-runs a run whose workers were lost to a node preemption (the retry can help) at
# most this often; errors raised by the training itself (OOM, bad data) are never retried, and a
# NaN loss is not an error at all (the trial ends `diverged`).
PREEMPTION_RETRIES = 3
KEEP_SESSIONS = 5  # session folders (logs) of ended ofasearch-started instances kept under Ray's temp dir
LOG_ROTATION = {"RAY_ROTATION_MAX_BYTES": str(64 * 1024**2), "RAY_ROTATION_BACKUP_COUNT": "2"}
RECORDS_FILE = "ray-sessions.json"
INSTANCE_VAR = "OFASEARCH_RAY_INSTANCE"  # set for `ray start`: marks every process of the instance
ADDRESS_FILE = "ray_current_cluster"  # where `ray start` writes the address ray.init() discovers
STOP_GRACE_S = 3.0  # SIGTERM, then SIGKILL for what is left (the GCS and raylet may not exit on SIGTERM)

_left_registered = False


def records_dir() -> Path:
    """Per-user, per-host folder of ofasearch's Ray records and lock (under the local temp dir).
    The records name processes to stop and folders to delete, so the folder is checked at every
    use (a real folder of this user's, mode 0700), else a FileFault before anything is read."""
    return user_temp_dir()


_lock: FileLock | None = None


def _locked() -> FileLock:
    """The per-user lock around start, join and leave: one FileLock per process, reentrant (two
    flock()s of one file in one process would wait for each other)."""
    global _lock
    if _lock is None:
        _lock = FileLock(str(records_dir() / "ray.lock"))
    return _lock


def _pid_namespace() -> str:
    """Which PID namespace this process is in: a pid recorded in another one means nothing here."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _read_records() -> dict[str, list]:
    path = records_dir() / RECORDS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"live": [], "ended": [], "starting": []}
    except (OSError, ValueError) as e:
        logger.warning(f"{path}: unreadable ({e}); ofasearch forgets the Ray instances it recorded there")
        return {"live": [], "ended": [], "starting": []}
    # starting: instances a driver is starting (recorded before `ray start`, by their mark)
    return {key: list(data.get(key, [])) for key in ("live", "ended", "starting")}


def _write_records(records: dict[str, list]) -> None:
    atomic_write(records_dir() / RECORDS_FILE, json.dumps(records, indent=1))


def recorded_sessions() -> list[dict[str, Any]]:
    """The local Ray instances ofasearch started and has not stopped (on any host or namespace
    sharing this temp dir; each record says where)."""
    return _read_records()["live"]


def _here(record: dict[str, Any]) -> bool:
    return record.get("host") == socket.gethostname() and record.get("pidns") == _pid_namespace()


def _gcs_alive(record: dict[str, Any]) -> bool:
    """The recorded GCS process runs (same pid *and* start time: a reused pid is not it)."""
    try:
        proc = psutil.Process(record["gcs_pid"])
        return abs(proc.create_time() - record["gcs_created"]) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _ray_package() -> str:
    import ray

    return os.path.dirname(os.path.abspath(ray.__file__)) + os.sep


def is_ray_process(cmdline: list[str]) -> bool:
    """A command line of Ray's: a worker (``ray::...``) or a program or script of the installed
    ray package (gcs_server, raylet, the dashboard and its agents, the log monitor)."""
    if cmdline and cmdline[0].startswith("ray::"):
        return True
    package = _ray_package()
    return any(os.path.isabs(arg) and os.path.abspath(arg).startswith(package) for arg in cmdline)


def session_processes(record: dict[str, Any]) -> list[psutil.Process]:
    """This user's processes of a recorded instance: every process Ray starts inherits the
    environment of ``ray start`` and so the instance's random mark (``INSTANCE_VAR``), workers
    and agents included (they rename themselves ``ray::...`` and leave the process group). Only
    Ray's own programs (:func:`is_ray_process`) count: whatever else inherited the mark (a shell,
    a user's tool started from a trial) is never stopped."""
    found = []
    for proc in psutil.process_iter(["uids", "create_time"]):
        try:
            if proc.pid == os.getpid() or proc.info["uids"] is None or proc.info["uids"].real != os.getuid():
                continue
            if proc.info["create_time"] < record["started_at"] - 1:
                continue
            if proc.environ().get(INSTANCE_VAR) == record["mark"] and is_ray_process(proc.cmdline()):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def _stop(procs: list[psutil.Process]) -> list[int]:
    """SIGTERM, then SIGKILL what has not exited after ``STOP_GRACE_S``; returns the pids."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=STOP_GRACE_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=STOP_GRACE_S)
    return sorted(p.pid for p in procs)


def ray_temp_dir() -> Path:
    """Ray's default temp root (``/tmp/ray`` on Linux): session folders and ``ray_current_cluster``."""
    from ray._common.utils import get_default_ray_temp_dir

    return Path(get_default_ray_temp_dir())


def prune_ray_sessions(
    ended: list[str], keep: int = KEEP_SESSIONS, root: Path | None = None
) -> tuple[list[Path], list[str]]:
    """Delete the session folders of ended ofasearch instances but the ``keep`` newest (by name:
    Ray names them by start time). Only real ``session_*`` folders directly under ``root`` (Ray's
    temp dir) are ever deleted: any other path a record names is forgotten with a warning.
    Returns (deleted folders, the ones still kept)."""
    root = ray_temp_dir() if root is None else root
    sessions = []
    for entry in sorted({str(e) for e in ended}):
        folder = Path(entry)
        if folder.parent == root and folder.name.startswith("session_") and not folder.is_symlink():
            sessions.append(entry)
        else:
            logger.warning(f"{entry}: not a Ray session folder under {root}; left alone and forgotten")
    ordered = sorted(sessions, key=lambda s: Path(s).name)
    doomed, kept = ordered[: max(0, len(ordered) - keep)], ordered[max(0, len(ordered) - keep) :]
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return [Path(f) for f in doomed], kept


def _end(record: dict[str, Any], records: dict[str, list]) -> list[int]:
    """Stop a recorded instance's processes, forget it, and drop Ray's address file if it
    points there (a later ray.init() would otherwise try to join a dead instance)."""
    pids = _stop(session_processes(record))
    records["live"] = [r for r in records["live"] if r["session_dir"] != record["session_dir"]]
    records["ended"].append(record["session_dir"])
    address_file = ray_temp_dir() / ADDRESS_FILE
    try:
        if address_file.read_text().strip() == record["address"]:
            address_file.unlink()
    except OSError:
        pass
    return pids


def reap_dead_sessions() -> list[int]:
    """Stop what is left of the local instances ofasearch started whose GCS is gone (a crash of
    the head, e.g. out of memory); prune old session folders of ended ones. Returns the pids
    stopped."""
    with _locked():
        return _reap()


def _reap() -> list[int]:
    records, pids = _read_records(), []
    # the lock is held from the mark's record to the instance's: a start recorded but not
    # finished is one whose driver died in between (a kill right after `ray start`)
    for record in [r for r in records["starting"] if _here(r)]:
        stopped = _stop(session_processes(record))
        pids += stopped
        records["starting"].remove(record)
        if stopped:
            logger.info(
                f"stopped {len(stopped)} process(es) of a Ray instance whose starting ofasearch driver was killed "
                f"before it recorded the instance: pids {stopped}"
            )
    for record in [r for r in records["live"] if _here(r) and not _gcs_alive(r)]:
        stopped = _end(record, records)
        pids += stopped
        if stopped:
            logger.info(
                f"stopped {len(stopped)} process(es) left by a crashed Ray instance that ofasearch started "
                f"({Path(record['session_dir']).name}): pids {stopped}"
            )
    removed, records["ended"] = prune_ray_sessions(records["ended"])
    if removed:
        logger.info(f"removed {len(removed)} old Ray session folder(s) under {ray_temp_dir()}")
    _write_records(records)
    return pids


def _answers(address: str, timeout_s: float = 2.0) -> bool:
    """A TCP connection to ``host:port`` succeeds (the GCS of a live instance listens there)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _discovered_address() -> str | None:
    """The address ``ray start`` left for ray.init() on this host, when a GCS answers there."""
    try:
        address = (ray_temp_dir() / ADDRESS_FILE).read_text().strip()
    except OSError:
        return None
    return address if address and _answers(address) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _ensure_auth_token(ray_cli: list[str]) -> None:
    """A token for the new instance, as ray.init() makes for a local one: the GCS and dashboard
    then ask for it (``ray get-auth-token``), and every ray.init() on this host finds it."""
    if os.environ.get("RAY_AUTH_MODE") or os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return  # the user chose
    if (Path.home() / ".ray" / "auth_token").is_file():
        return
    subprocess.run([*ray_cli, "get-auth-token", "--generate"], capture_output=True, check=False)


def _start_recorded(num_cpus: int) -> dict[str, Any]:
    """:func:`_start_head` with the instance's mark recorded before it starts and its full record
    after (under the records' lock): a driver killed at any moment in between leaves a record by
    which the next ofasearch command finds the instance's processes and stops them (``_reap``)."""
    starting = {
        "host": socket.gethostname(),
        "pidns": _pid_namespace(),
        "mark": uuid.uuid4().hex,
        "started_at": time.time(),
        "started_by": os.getpid(),
    }
    records = _read_records()
    records["starting"].append(starting)
    _write_records(records)
    try:
        started = _start_head(num_cpus, starting)
        kill_point("ray-started")  # the instance runs; only its mark is recorded
    except BaseException:
        _stop(session_processes(starting))
        started = None
        raise
    finally:
        records = _read_records()
        records["starting"] = [r for r in records["starting"] if r["mark"] != starting["mark"]]
        if started is not None:
            records["live"].append(started)
        _write_records(records)
    return started


def _start_head(num_cpus: int, record: dict[str, Any]) -> dict[str, Any]:
    """``ray start --head`` in a new session (process group), every process marked with
    ``record``'s mark: returns the instance's record."""
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    _ensure_auth_token(ray_cli)
    port = _free_port()
    args = [
        *ray_cli,
        "start",
        "--head",
        f"--port={port}",
        f"--num-cpus={num_cpus}",
        "--dashboard-host=127.0.0.1",
        "--disable-usage-stats",
    ]
    # LOG_ROTATION is read by the processes Ray starts (the user's settings win); the mark proves
    # later which processes are this instance's
    env = {**LOG_ROTATION, **os.environ, INSTANCE_VAR: record["mark"]}
    # a session of its own: Ctrl-C in the terminal (SIGINT to the foreground group) reaches the
    # drivers, never the instance they may share
    # output to a file, not a pipe: the processes it leaves running keep what they inherit open
    with tempfile.TemporaryFile("w+") as log:
        starter = subprocess.run(args, env=env, start_new_session=True, stdout=log, stderr=log, check=False)
        log.seek(0)
        output = log.read()
    if starter.returncode != 0:
        tail = [line for line in output.splitlines() if line.strip()][-3:]
        raise RuntimeError(f"`ray start --head` failed (exit {starter.returncode}): {' | '.join(tail)}")
    for proc in session_processes(record):
        try:
            if proc.name() == "gcs_server":
                flags = dict(a[2:].split("=", 1) for a in proc.cmdline() if a.startswith("--") and "=" in a)
                return {
                    **record,
                    "address": f"{flags['node-ip-address']}:{port}",
                    "session_dir": flags["session-dir"],
                    "gcs_pid": proc.pid,
                    "gcs_created": proc.create_time(),
                }
        except (psutil.Error, KeyError):
            continue
    raise RuntimeError("`ray start --head` exited 0 but its GCS does not run")


def ensure_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    worker_output: bool = True,
) -> str | None:
    """Join the Ray that Ray's discovery finds (``address``, ``$RAY_ADDRESS``, a ``ray start``-ed
    instance on this host) or start a local one with ``num_cpus`` CPUs (ignored when joining:
    the instance's nodes declare their own). Returns the dashboard URL. ``worker_output=False``
    keeps the trials' own prints out of the terminal (they stay in Ray's logs). :func:`leave_ray`
    (also run at exit) disconnects and stops an instance ofasearch started when no one else uses it."""
    import ray

    if ray.is_initialized():
        return None
    explicit = address or os.environ.get("RAY_ADDRESS") or None
    with _locked():
        _reap()
        found, started = explicit or _discovered_address(), None
        if found:
            ours = any(r["address"] == found and _here(r) for r in recorded_sessions())
            what = "the local Ray instance ofasearch started" if ours else "the Ray instance"
            logger.info(f"joining {what} at {found}")
            if num_cpus:
                logger.warning(
                    f"--num-cpus {num_cpus} ignored: joining an existing Ray instance, whose nodes bring their own CPUs"
                )
        else:
            cpus = num_cpus or os.cpu_count() or 1
            started = _start_recorded(cpus)
            logger.info(
                f"started a local Ray instance at {started['address']} ({cpus} CPUs) in its own process group; "
                "the last ofasearch run to leave it stops it"
            )
        try:
            # address=None unless given: ray.init() discovers what we found (or just started) on
            # this host and picks up the local auth token, as for any `ray start`-ed instance
            context = _init_keeping_sigterm(ray, address, worker_output)
        except BaseException:
            if started is not None:  # never leave behind an instance no driver could use
                records = _read_records()
                _end(started, records)
                _write_records(records)
            raise
    global _left_registered
    if not _left_registered:
        atexit.register(leave_ray)  # after ray.init's own exit hook, so it runs first: still connected
        _left_registered = True
    url = getattr(context, "dashboard_url", None)
    if url:
        logger.info(f"Ray dashboard: http://{url} (token: `ray get-auth-token`)")
    return f"http://{url}" if url else None


def _init_keeping_sigterm(ray: Any, address: str | None, worker_output: bool) -> Any:
    """``ray.init``, with this process's SIGTERM handler kept: ray.init installs one that exits
    at once (no resume line, trials left "running"); the command line's stops the search as
    Ctrl-C does. Without a handler of the process's own, Ray's stays (it exits through atexit,
    which leaves Ray cleanly)."""
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    try:
        return ray.init(address=address, log_to_driver=worker_output)
    finally:
        if callable(handler):
            signal.signal(signal.SIGTERM, handler)


def other_drivers() -> list[str]:
    """Jobs other than this driver's that are still alive on the connected instance (other
    drivers, submitted jobs): the GCS's job table, through Ray's state API."""
    import ray
    from ray.util.state import list_jobs

    mine = ray.get_runtime_context().get_job_id()
    for attempt in range(3):  # the dashboard serving the state API may still be starting
        try:
            jobs = list_jobs(raise_on_missing_output=False)
            break
        except Exception:
            if attempt == 2:
                raise
            time.sleep(2)
    alive = []
    for job in jobs:
        # a driver's job is RUNNING until the GCS sees it gone (SUCCEEDED): a killed driver counts no more
        if job.job_id == mine or str(job.status) not in ("PENDING", "RUNNING"):
            continue
        alive.append(job.job_id or job.submission_id or "?")
    return alive


def leave_ray() -> None:
    """Disconnect; stop the instance only when ofasearch started it (recorded, on this host) and
    no other driver is connected, else leave it running and say why."""
    import ray

    if not ray.is_initialized():
        return
    session = Path(ray.get_runtime_context().get_session_name()).name
    with _locked():
        records = _read_records()
        record = next((r for r in records["live"] if Path(r["session_dir"]).name == session and _here(r)), None)
        if record is None:
            ray.shutdown()  # not ofasearch's: only disconnect
            return
        try:
            others = other_drivers()
        except Exception as e:  # the state API is down: never stop what might be in use
            logger.warning(f"leaving the local Ray instance running: could not list its drivers ({e})")
            ray.shutdown()
            return
        ray.shutdown()
        if others:
            logger.info(
                f"leaving the local Ray instance running: {len(others)} other driver(s) use it "
                f"(jobs {', '.join(others)}); the last ofasearch run to leave it stops it"
            )
            return
        pids = _end(record, records)
        _write_records(records)
        logger.info(f"stopped the local Ray instance ofasearch started ({len(pids)} processes)")


def stop_abandoned_instances() -> None:
    """Stop the local instances ofasearch started on this host whose starting driver is gone
    (e.g. killed after its search finished, so no ``resume`` joined them again): the one Ray's
    discovery finds is joined and left, which stops it unless another driver still uses it
    (:func:`leave_ray`)."""
    import ray

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        return  # connected, or told which Ray to use: not this one's business
    with _locked():
        abandoned = [
            r
            for r in _read_records()["live"]
            if _here(r) and "started_by" in r and _gcs_alive(r) and not psutil.pid_exists(r["started_by"])
        ]
    discovered = _discovered_address() if abandoned else None
    for record in abandoned:
        if record["address"] != discovered:
            continue  # joined as Ray's discovery finds it (ray.init then finds the local auth token)
        logger.info(f"the driver that started the local Ray instance at {record['address']} is gone")
        with ray_session(worker_output=False):
            pass


@contextmanager
def ray_session(
    address: str | None = None, num_cpus: int | None = None, *, worker_output: bool = True
) -> Iterator[str | None]:
    """:func:`ensure_ray` for a block, then :func:`leave_ray`; a Ray already connected before the
    block is left as it is (its owner leaves it). Yields the dashboard URL."""
    import ray

    if ray.is_initialized():
        yield None
        return
    url = ensure_ray(address, num_cpus, worker_output=worker_output)
    try:
        yield url
    finally:
        leave_ray()


def check_fits(per_worker: dict[str, float], workers: int, where: str) -> None:
    """Fail fast, with a clear message, when one trial (or run) needs more CPUs/GPUs than the
    whole Ray cluster has: Ray would otherwise wait for them forever."""
    import ray

    from ofasearch.errors import SpecError

    have = ray.cluster_resources()
    problems = []
    for key, field in (("CPU", "cpus_per_worker"), ("GPU", "gpus_per_worker")):
        need = per_worker.get(key, 0.0) * workers
        if need > have.get(key, 0.0) + 1e-9:
            problems.append(
                f"{where}.{field}: {per_worker[key]:g} x {workers} worker(s) needs {need:g} {key}s, "
                f"but the Ray cluster has {have.get(key, 0.0):g}"
            )
    if problems:
        raise SpecError(problems)


def train_failure_config() -> FailureConfig:
    """Ray Train's retry policy for ofasearch runs: lost (preempted) workers only; a stuck worker
    group start becomes an error after 3 controller failures instead of hanging."""
    return FailureConfig(max_failures=0, max_preemption_failures=PREEMPTION_RETRIES, controller_failure_limit=3)
