"""How many trials share one GPU: ``resources.gpus_per_worker: auto``.

A small student at CIFAR's size keeps a GPU a few percent busy: one trial per GPU pays for idle
silicon. Packing several trials on a GPU (Ray's fractional GPUs) helps only while the GPU has idle
time left and its memory holds them, which depends on the pair, the image size and the batch, so
it is measured, not guessed: before the first trial, the search trains the heaviest pair's
paper-default trial for two short epochs alone, then 2, 4 and 8 copies at once (all measuring
their second epoch together), and packs the most copies that still raised the summed img/s by
:data:`MIN_GAIN`, within :data:`MEMORY_SHARE` of the GPU's memory and the CPUs a GPU node has per
GPU. The choice, with what it was measured from, is one log line and is kept in ``state.json``:
a resumed search packs its trials as before. A number in ``gpus_per_worker`` is used as given.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from ofasearch.config import Spec
from ofasearch.config.tunable import Choices
from ofasearch.search.space import SearchSpace
from ofasearch.search.state import read_state, update_state
from ofasearch.utils.storage import Location

__all__ = [
    "MEMORY_SHARE",
    "MIN_GAIN",
    "PACKING_LEVELS",
    "Packing",
    "ProbeRun",
    "choose_trials_per_gpu",
    "PROVISIONAL_GPUS",
    "pack_trials",
    "packing_cap",
    "unmeasured_packing",
    "with_gpus",
]

logger = logging.getLogger(__name__)

PACKING_LEVELS = (1, 2, 4, 8)  # trials per GPU tried, in order
MIN_GAIN = 1.1  # a level must raise the summed img/s by 10 % over the best so far: less is noise
MEMORY_SHARE = 0.85  # of the GPU's memory the packed trials may hold together
PROBE_BATCHES = 50  # training batches per probe epoch
STATE_KEY = "packing"


@dataclass(frozen=True)
class ProbeRun:
    """One probe trial's measurement: its second epoch's img/s and, on a GPU, the device memory it
    held at its peak (CUDA context included) and the device's total."""

    images_per_second: float
    footprint_bytes: int = 0
    device_bytes: int = 0


@dataclass(frozen=True)
class Packing:
    """The GPUs each trial gets and the line that says why."""

    gpus_per_worker: float
    line: str


PROVISIONAL_GPUS = 1.0  # what teachers train with while one-worker GPU trials await their measurement


def with_gpus(space: SearchSpace, gpus: float) -> SearchSpace:
    """``space`` (and its spec) with ``resources.gpus_per_worker`` set to ``gpus``."""
    spec = space.spec
    resources = spec.resources.model_copy(update={"gpus_per_worker": gpus})
    return SearchSpace(spec.model_copy(update={"resources": resources}), space.available_stages)


def unmeasured_packing(spec: Spec, cluster_gpus: float) -> Packing | None:
    """What ``auto`` means where no measurement is needed: no GPU in the cluster (the CPU), or DDP
    trials (one GPU per worker). None: one-worker trials on a GPU cluster, measured by
    :func:`pack_trials` once the teachers are ready (which train with :data:`PROVISIONAL_GPUS`)."""
    if cluster_gpus < 1:
        return Packing(0.0, "resources.gpus_per_worker: auto -> 0 (the Ray cluster has no GPU: trials train on CPUs)")
    if spec.resources.workers_per_trial > 1:
        line = "resources.gpus_per_worker: auto -> 1 (one GPU per DDP worker; only one-worker trials are packed)"
        return Packing(1.0, line)
    return None


def packing_cap(first: ProbeRun, cpus_per_gpu: float, cpus_per_worker: float) -> tuple[int, str]:
    """The most trials one GPU could hold: by memory (:data:`MEMORY_SHARE` of it over one trial's
    footprint) and by the CPUs its node has per GPU; with the reason, for the log line."""
    caps = {"CPUs per GPU": math.floor(cpus_per_gpu / cpus_per_worker + 1e-9)}
    if first.footprint_bytes > 0 and first.device_bytes > 0:
        caps["memory"] = math.floor(MEMORY_SHARE * first.device_bytes / first.footprint_bytes)
    reason, cap = min(caps.items(), key=lambda item: item[1])
    return max(1, min(cap, PACKING_LEVELS[-1])), reason


def choose_trials_per_gpu(measure: Callable[[int], float], cap: int, alone: float) -> tuple[int, dict[int, float]]:
    """The most trials per GPU (of :data:`PACKING_LEVELS`, at most ``cap``) whose summed img/s,
    ``measure(k)``, each raised the best so far by :data:`MIN_GAIN`, starting from one trial's
    ``alone``; with the summed img/s of every level measured, for the log line."""
    rates = {1: alone}
    best = 1
    for level in PACKING_LEVELS[1:]:
        if level > cap:
            break
        rates[level] = measure(level)
        if rates[level] < MIN_GAIN * rates[best]:
            break
        best = level
    return best, rates


def pack_trials(
    spec: Spec,
    space: SearchSpace,
    teachers: list[dict[str, Any]],
    files: dict[str, Any],
    folder: Location,
    *,
    batches: int = PROBE_BATCHES,
) -> Packing:
    """The packing of this search's one-worker GPU trials: as recorded in ``folder`` (a resume), or
    measured now on one GPU of the Ray cluster and recorded."""
    recorded = read_state(folder).get(STATE_KEY)
    if recorded:
        return Packing(**recorded)
    packing = _measure_packing(spec, space, teachers, files, batches=batches)
    update_state(folder, **{STATE_KEY: asdict(packing)})
    return packing


def _measure_packing(
    spec: Spec, space: SearchSpace, teachers: list[dict[str, Any]], files: dict[str, Any], *, batches: int
) -> Packing:
    import ray

    params, label = _heaviest_trial(space)
    cpus = spec.resources.cpus_per_worker

    def level_runs(level: int, gpus: float) -> list[ProbeRun]:
        return measure_level(spec, space, params, teachers, files, level, cpus=cpus, gpus=gpus, batches=batches)

    try:
        first = level_runs(1, 1.0)[0]
    except ray.exceptions.RayError as exc:  # the trial itself fails: the first search trial says why
        reason = str(exc).strip().splitlines()[-1][:200]
        return Packing(1.0, f"resources.gpus_per_worker: auto -> 1 (the packing probe failed: {reason})")
    cap, bound = packing_cap(first, _cpus_per_gpu(), cpus)

    def summed(level: int) -> float:
        try:
            return sum(run.images_per_second for run in level_runs(level, 1.0 / level))
        except ray.exceptions.RayError:  # e.g. out of memory: this level does not fit
            return 0.0

    best, rates = choose_trials_per_gpu(summed, cap, first.images_per_second)
    measured = ", ".join(f"{k}: {rate:,.0f}" for k, rate in rates.items())
    memory = ""
    if first.device_bytes:
        memory = f"; one trial holds {first.footprint_bytes / 2**30:.1f} of {first.device_bytes / 2**30:.1f} GiB"
    line = (
        f"resources.gpus_per_worker: auto -> {1 / best:g} ({best} trial(s) per GPU; {label}, summed img/s by "
        f"trials per GPU {measured}; a level counts when it adds {MIN_GAIN - 1:.0%}; at most {cap} by "
        f"{bound}{memory})"
    )
    return Packing(1.0 / best, line)


def measure_level(
    spec: Spec,
    space: SearchSpace,
    params: dict[str, Any],
    teachers: list[dict[str, Any]],
    files: dict[str, Any],
    level: int,
    *,
    cpus: float,
    gpus: float,
    batches: int,
) -> list[ProbeRun]:
    """``level`` copies of the trial ``params`` at once, each a Ray task with ``cpus`` and ``gpus``
    (a fraction of one GPU packs them on it); they start their measured epoch together."""
    import ray

    barrier = _barrier(level)
    task = ray.remote(_probe_trial).options(num_cpus=cpus, num_gpus=gpus)
    spec_data, stages = spec.model_dump(mode="json"), space.available_stages
    refs = [task.remote(params, spec_data, stages, teachers, files, batches, barrier) for _ in range(level)]
    pending = list(refs)
    try:
        while pending:  # a failed copy (e.g. out of memory) ends the level at once
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)
        return ray.get(refs)
    finally:
        for ref in pending:  # the other copies stop, instead of waiting at the barrier for it
            ray.cancel(ref, force=True)
        ray.kill(barrier)


def _heaviest_trial(space: SearchSpace) -> tuple[dict[str, Any], str]:
    """The paper-default params of the pair with the most parameters (student and teacher: a live
    teacher's activations share the device), at the largest batch size searched; and its label."""
    import torch

    from ofasearch.models import build_model

    size = space.spec.data.image_size

    def parameters(pair: int) -> int:
        models = (space.pairs[pair].student, space.pairs[pair].teacher)
        with torch.device("meta"):  # shapes only: nothing allocated
            nets = [build_model(m.model, m.kwargs, num_classes=10, in_chans=3, image_size=size) for m in models]
        return sum(p.numel() for net in nets for p in net.parameters())

    pair = max(range(len(space.pairs)), key=parameters) if len(space.pairs) > 1 else 0
    params = space.defaults(pair)
    dist = space.spec.searched_values().get("optim.batch_size")
    if dist is not None:
        name = space.param_name("optim.batch_size", pair)
        params[name] = max(dist.choices) if isinstance(dist, Choices) else int(dist.high)
    return params, f"measured on {space.pairs[pair].label}"


def _cpus_per_gpu() -> float:
    """The fewest CPUs per GPU of the Ray cluster's live GPU nodes (packed trials need a CPU each)."""
    import ray

    ratios = [
        node["Resources"].get("CPU", 0.0) / node["Resources"]["GPU"]
        for node in ray.nodes()
        if node.get("Alive") and node["Resources"].get("GPU", 0.0) > 0
    ]
    return min(ratios) if ratios else 0.0


class _BarrierActor:
    """Every probe trial of a level waits here after its first (warm-up) epoch until all arrived:
    their measured epochs overlap however long each took to start."""

    def __init__(self, parties: int) -> None:
        self.parties, self.arrived = parties, 0
        self.all_here = asyncio.Event()

    async def arrive(self) -> None:
        self.arrived += 1
        if self.arrived >= self.parties:
            self.all_here.set()
        await self.all_here.wait()


def _barrier(parties: int) -> Any:
    """A :class:`_BarrierActor` for ``parties`` probe trials (an async Ray actor, no CPU)."""
    import ray

    return ray.remote(num_cpus=0)(_BarrierActor).remote(parties)


def _probe_trial(
    params: dict[str, Any],
    spec_data: dict[str, Any],
    stages: list[list[int]],
    teachers: list[dict[str, Any]],
    files: dict[str, Any],
    batches: int,
    barrier: Any,
) -> ProbeRun:
    """One probe trial (a Ray task): the trial ``params`` as a search runs it, on its first
    ``batches`` training batches for two epochs; the second is measured."""
    import ray
    import torch

    from ofasearch.data import Pipeline
    from ofasearch.search.trial import probe_inputs
    from ofasearch.training.job import fit_for_search
    from ofasearch.training.ranks import pick_device
    from ofasearch.training.resident import resident_bytes, resident_choice

    space = SearchSpace(Spec.model_validate(spec_data), stages)
    config, splits, teacher, cache = probe_inputs(space, params, teachers, files)
    config = config.model_copy(update={"optim": config.optim.model_copy(update={"epochs": 2})})
    batch = config.optim.batch_size
    full = splits.train
    n = min(len(full), batch * batches)
    probe_splits = replace(
        splits, train=full.take(torch.arange(n)), val=splits.val.take(torch.arange(min(batch, len(splits.val))))
    )
    gpus = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
    device = pick_device(gpus)
    seconds: list[float] = []

    def report(metrics: dict[str, Any]) -> None:
        if metrics["epoch"] == 1:
            ray.get(barrier.arrive.remote())
        seconds.append(float(metrics["seconds"]))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fit_for_search(config, probe_splits, teacher, report, cache=cache, device=device)
    rate = n / seconds[-1]
    if device.type != "cuda":
        return ProbeRun(rate)
    free, total = torch.cuda.mem_get_info(device)
    context = (total - free) - torch.cuda.memory_reserved(device)
    footprint = context + torch.cuda.max_memory_reserved(device)
    pipeline = Pipeline(config.augment, splits)
    if resident_choice(str(config.optim.data_on_device), pipeline, full, cache, device).resident:
        size = 0 if pipeline.crops_stored_images else pipeline.image_size  # the whole train set lives there
        footprint += resident_bytes(full, size, cache) - resident_bytes(probe_splits.train, size, cache)
    return ProbeRun(rate, footprint, total)
