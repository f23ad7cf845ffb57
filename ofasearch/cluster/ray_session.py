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
import contextlib
import logging
import os
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

from ofasearch.cluster.ray_instances import (
    ADDRESS_FILE,
    INSTANCE_VAR,
    end_instance,
    gcs_alive,
    on_this_host,
    pid_namespace,
    ray_temp_dir,
    read_records,
    reap_locked,
    recorded_sessions,
    records_lock,
    session_processes,
    stop_processes,
    write_records,
)
from ofasearch.utils.killpoints import kill_point

__all__ = ["ensure_ray", "leave_ray", "other_drivers", "ray_session", "stop_abandoned_instances"]

logger = logging.getLogger(__name__)

LOG_ROTATION = {"RAY_ROTATION_MAX_BYTES": str(64 * 1024**2), "RAY_ROTATION_BACKUP_COUNT": "2"}

_left_registered = False
_connections = 0  # ray.init calls of this process so far
METRICS_VAR = "RAY_enable_metrics_collection"


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


# the ports `ray start --head` claims for itself by default (its port report: the GCS's 6379, the
# dashboard's 8265, the client server's 10001, the dashboard agent's 52365, workers' 10002-19999):
# a GCS port equal to one of them makes `ray start` refuse to start
RAY_DEFAULT_PORTS = frozenset({6379, 8265, 10001, 52365})
RAY_WORKER_PORTS = range(10002, 20000)


def _free_port() -> int:
    """A port free now that Ray will not claim for another of its components (the OS's
    ephemeral range holds 52365, the dashboard agent's)."""
    while True:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        if port not in RAY_DEFAULT_PORTS and port not in RAY_WORKER_PORTS:
            return port


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
        "pidns": pid_namespace(),
        "mark": uuid.uuid4().hex,
        "started_at": time.time(),
        "started_by": os.getpid(),
    }
    records = read_records()
    records["starting"].append(starting)
    write_records(records)
    try:
        started = _start_head(num_cpus, starting)
        kill_point("ray-started")  # the instance runs; only its mark is recorded
    except BaseException:
        stop_processes(session_processes(starting))
        started = None
        raise
    finally:
        records = read_records()
        records["starting"] = [r for r in records["starting"] if r["mark"] != starting["mark"]]
        if started is not None:
            records["live"].append(started)
        write_records(records)
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
    with records_lock():
        reap_locked()
        found, started = explicit or _discovered_address(), None
        if found:
            ours = any(r["address"] == found and on_this_host(r) for r in recorded_sessions())
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
                records = read_records()
                end_instance(started, records)
                write_records(records)
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
    global _connections
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    try:
        with _driver_metrics_off() if _connections else contextlib.nullcontext():
            context = ray.init(address=address, log_to_driver=worker_output)
        _connections += 1
        return context
    finally:
        if callable(handler):
            signal.signal(signal.SIGTERM, handler)


@contextmanager
def _driver_metrics_off() -> Iterator[None]:
    """This driver exports no metrics of its own for one ``ray.init``, unless the user set
    ``RAY_enable_metrics_collection``. With Ray 2.60 a process that connects a third time or more
    (a notebook running searches one after another, a test session) waits at every later
    disconnect for metric exports to the instances it left, 10-30 s each; the instance's own
    processes, the trials included, keep their metrics."""
    if METRICS_VAR in os.environ:
        yield
        return
    os.environ[METRICS_VAR] = "0"
    try:
        yield
    finally:
        os.environ.pop(METRICS_VAR, None)


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
    with records_lock():
        records = read_records()
        record = next((r for r in records["live"] if Path(r["session_dir"]).name == session and on_this_host(r)), None)
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
        pids = end_instance(record, records)
        write_records(records)
        logger.info(f"stopped the local Ray instance ofasearch started ({len(pids)} processes)")


def stop_abandoned_instances() -> None:
    """Stop the local instances ofasearch started on this host whose starting driver is gone
    (e.g. killed after its search finished, so no ``resume`` joined them again): the one Ray's
    discovery finds is joined and left, which stops it unless another driver still uses it
    (:func:`leave_ray`)."""
    import ray

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        return  # connected, or told which Ray to use: not this one's business
    with records_lock():
        abandoned = [
            r
            for r in read_records()["live"]
            if on_this_host(r) and "started_by" in r and gcs_alive(r) and not psutil.pid_exists(r["started_by"])
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
