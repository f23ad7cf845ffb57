"""Starting or joining Ray: one local instance per host, or an existing cluster by address."""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["check_fits", "ensure_ray", "shutdown_ray"]


def ensure_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    log: Callable[[str], None] = print,
) -> str | None:
    """Join ``address`` (or ``$RAY_ADDRESS``) or start a local Ray; returns the dashboard URL."""
    import ray

    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"address": address, "include_dashboard": True, "log_to_driver": True}
    if address is None:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
        kwargs["dashboard_host"] = "127.0.0.1"
    context = ray.init(**kwargs)
    url = getattr(context, "dashboard_url", None)
    if url:
        log(f"Ray dashboard: http://{url} (token: `ray get-auth-token`)")
    return f"http://{url}" if url else None


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


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
