"""The Ray instances ofasearch started on this host: their per-user records, their processes, and
reaping what a crashed instance or a killed driver left.

An instance is recorded (under a per-user lock, in a folder checked with ``lstat`` at every use)
before ``ray start`` runs and once it answers; every one of its processes carries its mark in the
environment (:data:`INSTANCE_VAR`). So after a crash only that instance's processes are stopped,
and only Ray's own ``session_*`` folders under Ray's temp dir are deleted: never a ``ray
start``-ed instance, a worker node, or another user's processes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock

from ofasearch.utils.files import atomic_write, user_temp_dir

__all__ = [
    "ADDRESS_FILE",
    "INSTANCE_VAR",
    "KEEP_SESSIONS",
    "RECORDS_FILE",
    "end_instance",
    "gcs_alive",
    "is_ray_process",
    "on_this_host",
    "pid_namespace",
    "prune_ray_sessions",
    "ray_temp_dir",
    "reap_dead_sessions",
    "reap_locked",
    "read_records",
    "recorded_sessions",
    "records_dir",
    "records_lock",
    "session_processes",
    "stop_processes",
    "write_records",
]

logger = logging.getLogger(__name__)

KEEP_SESSIONS = 5  # session folders (logs) of ended ofasearch-started instances kept under Ray's temp dir
RECORDS_FILE = "ray-sessions.json"
INSTANCE_VAR = "OFASEARCH_RAY_INSTANCE"  # set for `ray start`: marks every process of the instance
ADDRESS_FILE = "ray_current_cluster"  # where `ray start` writes the address ray.init() discovers
STOP_GRACE_S = 3.0  # SIGTERM, then SIGKILL for what is left
# Ray's processes that stay after SIGTERM (seen with Ray 2.60: still running 6 s later), so a stop
# does not wait for them: the GCS, the raylet and the autoscaler's monitor (matched by command line)
IGNORE_SIGTERM = ("gcs_server", "raylet", "autoscaler/_private/monitor.py")


def records_dir() -> Path:
    """Per-user, per-host folder of ofasearch's Ray records and lock (under the local temp dir).
    The records name processes to stop and folders to delete, so the folder is checked at every
    use (a real folder of this user's, mode 0700), else a FileFault before anything is read."""
    return user_temp_dir()


_lock: FileLock | None = None


def records_lock() -> FileLock:
    """The per-user lock around start, join and leave: one FileLock per process, reentrant (two
    flock()s of one file in one process would wait for each other)."""
    global _lock
    if _lock is None:
        _lock = FileLock(str(records_dir() / "ray.lock"))
    return _lock


def pid_namespace() -> str:
    """Which PID namespace this process is in: a pid recorded in another one means nothing here."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def read_records() -> dict[str, list]:
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


def write_records(records: dict[str, list]) -> None:
    atomic_write(records_dir() / RECORDS_FILE, json.dumps(records, indent=1))


def recorded_sessions() -> list[dict[str, Any]]:
    """The local Ray instances ofasearch started and has not stopped (on any host or namespace
    sharing this temp dir; each record says where)."""
    return read_records()["live"]


def on_this_host(record: dict[str, Any]) -> bool:
    return record.get("host") == socket.gethostname() and record.get("pidns") == pid_namespace()


def gcs_alive(record: dict[str, Any]) -> bool:
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
    """A command line of Ray's: a worker (``ray::...``), a program or script of the installed
    ray package (gcs_server, raylet, the dashboard and its agents, the log monitor) or one of its
    modules run with ``-m`` (the Ray Client server, ``python -m ray.util.client.server``)."""
    if cmdline and cmdline[0].startswith("ray::"):
        return True
    if any(flag == "-m" and module.startswith("ray.") for flag, module in zip(cmdline, cmdline[1:], strict=False)):
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


def stop_processes(procs: list[psutil.Process]) -> list[int]:
    """SIGTERM, then SIGKILL once the processes that exit on SIGTERM (workers, dashboard, log
    monitor) have, at most ``STOP_GRACE_S`` later: what :data:`IGNORE_SIGTERM` names is not
    waited for. Returns the pids."""
    lingering = [p for p in procs if _ignores_sigterm(p)]
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _wait_ended([p for p in procs if p not in lingering], STOP_GRACE_S)
    alive = [p for p in procs if _running(p)]
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    _wait_ended(alive, STOP_GRACE_S)
    return sorted(p.pid for p in procs)


def _ignores_sigterm(proc: psutil.Process) -> bool:
    try:
        return any(name in " ".join([proc.name(), *proc.cmdline()]) for name in IGNORE_SIGTERM)
    except psutil.Error:
        return False


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie: an exited process of a started instance is reaped by the host's
    init, which may do so only every second or two; it runs nothing meanwhile."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_ended(procs: list[psutil.Process], timeout: float) -> None:
    """Until every one of ``procs`` has exited (zombies count), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(_running(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)


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


def end_instance(record: dict[str, Any], records: dict[str, list]) -> list[int]:
    """Stop a recorded instance's processes, forget it, and drop Ray's address file if it
    points there (a later ray.init() would otherwise try to join a dead instance)."""
    pids = stop_processes(session_processes(record))
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
    with records_lock():
        return reap_locked()


def reap_locked() -> list[int]:
    records, pids = read_records(), []
    # the lock is held from the mark's record to the instance's: a start recorded but not
    # finished is one whose driver died in between (a kill right after `ray start`)
    for record in [r for r in records["starting"] if on_this_host(r)]:
        stopped = stop_processes(session_processes(record))
        pids += stopped
        records["starting"].remove(record)
        if stopped:
            logger.info(
                f"stopped {len(stopped)} process(es) of a Ray instance whose starting ofasearch driver was killed "
                f"before it recorded the instance: pids {stopped}"
            )
    for record in [r for r in records["live"] if on_this_host(r) and not gcs_alive(r)]:
        stopped = end_instance(record, records)
        pids += stopped
        if stopped:
            logger.info(
                f"stopped {len(stopped)} process(es) left by a crashed Ray instance that ofasearch started "
                f"({Path(record['session_dir']).name}): pids {stopped}"
            )
    removed, records["ended"] = prune_ray_sessions(records["ended"])
    if removed:
        logger.info(f"removed {len(removed)} old Ray session folder(s) under {ray_temp_dir()}")
    write_records(records)
    return pids
