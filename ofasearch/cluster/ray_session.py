"""Starting or joining Ray: one local instance per host, or an existing cluster by address.

A driver killed with SIGKILL leaves some of its local Ray processes behind (the dashboard and
runtime-env agents outlive the GCS); Ray never deletes its session folders. Before starting a
local instance, leftovers whose GCS is gone are stopped and old session folders pruned, so a
crashed search can be resumed without the user hunting for processes or disk space.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from ray.train import FailureConfig

__all__ = [
    "PREEMPTION_RETRIES",
    "check_fits",
    "ensure_ray",
    "local_ray_processes",
    "prune_ray_sessions",
    "stop_stale_ray",
    "train_failure_config",
]

logger = logging.getLogger(__name__)

# Ray Train re-runs a run whose workers were lost to a node preemption (the retry can help) at
# most this often; errors raised by the training itself (OOM, bad data) are never retried, and a
# NaN loss is not an error at all (the trial ends `diverged`).
PREEMPTION_RETRIES = 3
KEEP_SESSIONS = 5  # Ray session folders (logs) kept under Ray's temp dir
LOG_ROTATION = {"RAY_ROTATION_MAX_BYTES": str(64 * 1024**2), "RAY_ROTATION_BACKUP_COUNT": "2"}
_SCRIPTS = (
    "ray/dashboard/",
    "log_monitor.py",
    "ray/autoscaler/_private/monitor.py",
    "ray_process_reaper.py",
    "default_worker.py",
    "runtime_env/agent/main.py",
)


def _is_ray(proc: psutil.Process) -> bool:
    name = proc.info["name"] or ""
    if name.startswith("ray::") or name in ("raylet", "gcs_server"):
        return True
    args = " ".join(proc.info["cmdline"] or [])
    return args.startswith("ray::") or any(s in args for s in _SCRIPTS)


def local_ray_processes() -> tuple[list[psutil.Process], list[psutil.Process]]:
    """This user's live Ray processes on this host: (GCS servers, everything else)."""
    gcs, others = [], []
    uid = os.getuid()
    for proc in psutil.process_iter(["name", "cmdline", "uids", "status"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != uid or proc.pid == os.getpid():
                continue
            if proc.info["status"] == psutil.STATUS_ZOMBIE or not _is_ray(proc):
                continue
        except psutil.Error:
            continue
        (gcs if proc.info["name"] == "gcs_server" else others).append(proc)
    return gcs, others


def stop_stale_ray() -> list[int]:
    """Stop Ray processes left by a crashed driver (no GCS alive on this host); returns their pids."""
    gcs, others = local_ray_processes()
    if gcs or not others:
        return []
    for proc in others:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(others, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    pids = sorted(p.pid for p in others)
    logger.info(f"stopped {len(pids)} stale Ray process(es) left by an earlier crash: pids {pids}")
    return pids


def ray_temp_dir() -> Path:
    """Ray's default temp root (``/tmp/ray`` on Linux), where its session folders accumulate."""
    from ray._common.utils import get_default_ray_temp_dir

    return Path(get_default_ray_temp_dir())


def prune_ray_sessions(keep: int = KEEP_SESSIONS, root: Path | None = None) -> list[Path]:
    """Delete all but the ``keep`` newest ``session_*`` folders (never the one ``session_latest``
    points to). Only call it when no local Ray is running."""
    root = root or ray_temp_dir()
    sessions = sorted(p for p in root.glob("session_*") if p.is_dir() and not p.is_symlink())
    latest = (root / "session_latest").resolve() if (root / "session_latest").is_symlink() else None
    doomed = [p for p in sessions[: max(0, len(sessions) - keep)] if p.resolve() != latest]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def ensure_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    worker_output: bool = True,
) -> str | None:
    """Join ``address`` (or ``$RAY_ADDRESS``, or the Ray already running on this host) or start a
    local Ray; returns the dashboard URL. ``worker_output=False`` keeps the trials' own prints
    (progress bars, Ray Train banners) out of the terminal; they stay in Ray's logs."""
    import ray

    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"address": address, "include_dashboard": True, "log_to_driver": worker_output}
    if address is None:
        gcs, _ = local_ray_processes()
        if gcs:
            logger.info(f"joining the Ray instance already running on this host (gcs_server pid {gcs[0].pid})")
            kwargs["address"] = "auto"
        else:
            stop_stale_ray()
            pruned = prune_ray_sessions()
            if pruned:
                logger.info(f"removed {len(pruned)} old Ray session folder(s) under {ray_temp_dir()}")
            kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
            kwargs["dashboard_host"] = "127.0.0.1"
    with _environment(LOG_ROTATION if kwargs.get("address") is None else {}):  # read by the processes Ray starts
        context = ray.init(**kwargs)
    url = getattr(context, "dashboard_url", None)
    if url:
        logger.info(f"Ray dashboard: http://{url} (token: `ray get-auth-token`)")
    return f"http://{url}" if url else None


@contextmanager
def _environment(defaults: dict[str, str]) -> Iterator[None]:
    """Set ``defaults`` (where the user has not) for the block only, then restore the environment."""
    added = {k: v for k, v in defaults.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


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
