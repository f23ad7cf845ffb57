"""One Tune trial: resolve its config, then train with the local or the Ray Train backend.

``local`` runs the training loop inside the trial process and reports with ``tune.report``: for
one-process trials it avoids Ray Train's controller start-up. ``ray-train`` makes the trial a
driver that runs a ``TorchTrainer`` (DDP over ``workers_per_trial`` workers) whose reports
reach Tune through ``TuneReportCallback`` (Ray Train V2's supported way inside Tune).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import yaml

from ofasearch.cluster.node import NODE_KEY, load_node_splits, node_name
from ofasearch.cluster.shipping import ShippedFile, receive_teacher, shipment
from ofasearch.config import ResourcesSpec, Spec, TrainConfig, parse_config
from ofasearch.config.registry import get_method
from ofasearch.data import Splits
from ofasearch.search.space import SearchSpace
from ofasearch.training.logit_cache import LogitCache
from ofasearch.training.teacher import TeacherInfo
from ofasearch.utils.killpoints import kill_point

__all__ = [
    "BASELINE_KEY",
    "CONFIG_KEY",
    "CONFIRMS_KEY",
    "SEED_KEY",
    "TrialTimedOut",
    "backend_for",
    "cache_for_seed",
    "local_inputs",
    "probe_inputs",
    "run_trial",
    "trial_config",
    "trial_resources",
    "within",
]

BASELINE_KEY = "baseline"  # a baseline trial's config holds {"baseline": METHOD, **params}
# A confirmation run holds the train config it repeats (YAML), the trial it repeats and its seed.
CONFIG_KEY, CONFIRMS_KEY, SEED_KEY = "config", "confirms", "seed"
DRIVER_CPU = 0.1  # a ray-train trial's own process only waits for its workers


def backend_for(resources: ResourcesSpec) -> str:
    """``auto``: in-process for one worker, Ray Train for several."""
    if resources.backend != "auto":
        return resources.backend
    return "local" if resources.workers_per_trial == 1 else "ray-train"


def trial_resources(resources: ResourcesSpec) -> dict[str, float]:
    """What Tune reserves for the trial process itself."""
    if backend_for(resources) == "local":
        return {"cpu": resources.cpus_per_worker, "gpu": resources.gpus()}
    return {"cpu": DRIVER_CPU}


def trial_config(space: SearchSpace, params: dict[str, Any]) -> TrainConfig:
    """The train config a trial runs: the searcher's params (a baseline: the pair's defaults with
    its method and preset settings, :meth:`SearchSpace.baseline_overrides`);
    a confirmation run repeats a recorded config on another seed."""
    params = dict(params)
    if CONFIG_KEY in params:
        config = parse_config(yaml.safe_load(params[CONFIG_KEY]), f"trial {params.get(CONFIRMS_KEY)}")
    else:
        method = params.pop(BASELINE_KEY, None)
        config = space.config_for(params, **(space.baseline_overrides(method) if method else {}))
    if SEED_KEY in params:
        config = config.model_copy(update={"seed": int(params[SEED_KEY])})
    return config


def cache_for_seed(teacher: dict[str, Any], seed: int) -> dict[str, Any] | None:
    """The prepared logit cache of ``teacher`` for runs of ``seed``: the cached views are the
    augmentation of one seed, so a run of another seed without its own cache runs the teacher live."""
    caches = teacher.get("caches") or {}
    if str(seed) in caches:
        return caches[str(seed)]
    return teacher.get("cache") if teacher.get("cache_seed", seed) == seed else None


def run_trial(
    params: dict[str, Any],
    *,
    spec: dict[str, Any],
    stages: list[list[int]],
    teachers: list[dict[str, Any]],
    train_storage: str,
    files: dict[str, ShippedFile],
) -> None:
    """The Tune function trainable. ``teachers[pair]`` holds the prepared teacher (``info``) and
    its logit cache (``cache``, or None), both plain dicts made in the driver; ``files`` their
    files in Ray's object store, copied to this node (once per node) when it cannot see them.
    With ``search.trial_timeout`` a trial still running after it fails with "timed out"."""
    space = SearchSpace(Spec.model_validate(spec), stages)

    def train() -> None:
        kill_point(f"trial:{params.get(BASELINE_KEY, 'search')}")  # e.g. `trial:kd` hangs the KD baseline
        _train(space, params, teachers, train_storage, files)

    timeout = space.spec.search.trial_timeout
    if timeout is None:
        train()
    else:
        within(timeout, train)


class TrialTimedOut(TimeoutError):
    """A trial ran past ``search.trial_timeout``."""


def within(seconds: float, work: Callable[[], None]) -> None:
    """Run ``work`` and return, or raise :class:`TrialTimedOut` once ``seconds`` have passed.

    The work runs in a daemon thread and this one waits: a step blocked in a system call (a dead
    network mount) or a collective that never completes cannot be interrupted, but the trial
    still ends, Tune records its error and stops its process, and the search goes on. The
    work's own exceptions (a failure, Tune's stop of the trial) are raised here as they are."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # re-raised in the waiting thread, whatever it is
            failure.append(exc)

    thread = threading.Thread(target=run, name="ofasearch-trial", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TrialTimedOut(f"timed out after {seconds:g} s (search.trial_timeout)")
    if failure:
        raise failure[0]


def _train(
    space: SearchSpace,
    params: dict[str, Any],
    teachers: list[dict[str, Any]],
    train_storage: str,
    files: dict[str, ShippedFile],
) -> None:
    from ray import tune

    from ofasearch.training.job import fit_for_search

    config = trial_config(space, params)
    shipped = _shipped_teacher(space, config, teachers, files)
    res = config.resources
    if backend_for(res) == "local":
        splits, teacher, cache = local_inputs(config, shipped)
        report = _on_node(tune.report)
        fit_for_search(config, splits, teacher, report, cache=cache, gpus=res.gpus())
    else:
        _run_on_ray_train(config, shipped, train_storage, tune.get_context().get_trial_id())


def _shipped_teacher(
    space: SearchSpace, config: TrainConfig, teachers: list[dict[str, Any]], files: dict[str, ShippedFile]
) -> dict[str, Any]:
    """The prepared teacher (weights or the logit cache of the trial's seed) of ``config``'s pair,
    as plain data and files in Ray's object store; nothing for a method without a teacher."""
    pair = space.pair_index_of(config)
    teacher = cache = None
    if get_method(config.distill.method).teacher:
        teacher = TeacherInfo(**teachers[pair]["info"])
        cached = cache_for_seed(teachers[pair], config.seed)
        cache = LogitCache(**cached) if cached else None
    return shipment(teacher, cache, files)


def local_inputs(config: TrainConfig, shipped: dict[str, Any]) -> tuple[Splits, TeacherInfo | None, LogitCache | None]:
    """What a one-process trial trains on: this node's data and its teacher's files copied to this
    node; torch's CPU threads set to ``resources.cpus_per_worker``."""
    import torch

    torch.set_num_threads(max(1, int(config.resources.cpus_per_worker)))
    teacher, cache = receive_teacher(shipped)
    return load_node_splits(config.data), teacher, cache


def probe_inputs(
    space: SearchSpace, params: dict[str, Any], teachers: list[dict[str, Any]], files: dict[str, ShippedFile]
) -> tuple[TrainConfig, Splits, TeacherInfo | None, LogitCache | None]:
    """The config and inputs of the trial ``params``, exactly as :func:`run_trial` gives them to a
    one-process trial (ofasearch.search.packing measures such a trial before the search)."""
    config = trial_config(space, params)
    return config, *local_inputs(config, _shipped_teacher(space, config, teachers, files))


def _on_node(report: Any) -> Any:
    """``report`` with this node's name in every result (``trials.parquet`` records it)."""
    node = node_name()

    def on_node(metrics: dict[str, Any], **kwargs: Any) -> None:
        report({**metrics, NODE_KEY: node}, **kwargs)

    return on_node


def _run_on_ray_train(config: TrainConfig, shipped: dict[str, Any], storage: str, trial_id: str) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    from ofasearch.cluster.trainer import torch_trainer, worker_payload

    res = config.resources
    trainer = torch_trainer(
        worker_payload(config, shipped, search=True),
        name=f"trial-{trial_id}",
        storage_path=storage,
        workers=res.workers_per_trial,
        cpus_per_worker=res.cpus_per_worker,
        gpus_per_worker=res.gpus(),
        driver_cpus=DRIVER_CPU,  # this trial's own process, reserved by Tune (trial_resources)
        callbacks=[TuneReportCallback()],
    )
    trainer.fit()
