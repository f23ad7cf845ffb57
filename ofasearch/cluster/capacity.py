"""Whether what a trial asks for fits the Ray cluster at all: Ray would otherwise wait forever."""

from __future__ import annotations

__all__ = ["check_fits"]


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
