"""One Tune trial: resolve its config, then train with the local or the Ray Train backend.

``local`` runs the training loop inside the trial process and reports with ``tune.report``: for
one-process trials it avoids Ray Train's controller start-up. ``ray-train`` makes the trial a
driver that runs a ``TorchTrainer`` (DDP over ``workers_per_trial`` workers) whose reports
reach Tune through ``TuneReportCallback`` (Ray Train V2's supported way inside Tune).
"""

from __future__ import annotations

from typing import Any

from ofasearch.config import ResourcesSpec, Spec, TrainConfig
from ofasearch.search.space import SearchSpace
from ofasearch.training.logit_cache import LogitCache
from ofasearch.training.teacher import TeacherInfo

__all__ = ["BASELINE_KEY", "backend_for", "run_trial", "trial_resources"]

BASELINE_KEY = "baseline"  # a baseline trial's config holds {"baseline": "none"|"kd", **params}
DRIVER_CPU = 0.1  # a ray-train trial's own process only waits for its workers


def backend_for(resources: ResourcesSpec) -> str:
    """``auto``: in-process for one worker, Ray Train for several."""
    if resources.backend != "auto":
        return resources.backend
    return "local" if resources.workers_per_trial == 1 else "ray-train"


def trial_resources(resources: ResourcesSpec) -> dict[str, float]:
    """What Tune reserves for the trial process itself."""
    if backend_for(resources) == "local":
        return {"cpu": resources.cpus_per_worker, "gpu": resources.gpus_per_worker}
    return {"cpu": DRIVER_CPU}


def trial_config(space: SearchSpace, params: dict[str, Any]) -> TrainConfig:
    """The train config a trial runs (baselines override the method)."""
    params = dict(params)
    method = params.pop(BASELINE_KEY, None)
    return space.config_for(params, **({"distill.method": method} if method else {}))


def run_trial(
    params: dict[str, Any],
    *,
    spec: dict[str, Any],
    stages: list[list[int]],
    teachers: list[dict[str, Any]],
    train_storage: str,
) -> None:
    """The Tune function trainable. ``teachers[pair]`` holds the prepared teacher (``info``) and
    its logit cache (``cache``, or None), both plain dicts made in the driver."""
    import torch
    from ray import tune

    from ofasearch.data import load_splits
    from ofasearch.training.job import fit_for_search

    space = SearchSpace(Spec.model_validate(spec), stages)
    config = trial_config(space, params)
    pair = space.pair_index({k: v for k, v in params.items() if k != BASELINE_KEY})
    teacher = cache = None
    if config.distill.method != "none":
        teacher = TeacherInfo(**teachers[pair]["info"])
        cache = LogitCache(**teachers[pair]["cache"]) if teachers[pair].get("cache") else None
    res = config.resources
    torch.set_num_threads(max(1, int(res.cpus_per_worker)))
    if backend_for(res) == "local":
        splits = load_splits(config.data)
        fit_for_search(config, splits, teacher, tune.report, cache=cache, gpus=res.gpus_per_worker)
    else:
        _run_on_ray_train(config, teacher, cache, train_storage, tune.get_context().get_trial_id())


def _run_on_ray_train(
    config: TrainConfig, teacher: TeacherInfo | None, cache: LogitCache | None, storage: str, trial_id: str
) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from ofasearch.cluster.ray_session import train_failure_config
    from ofasearch.training.job import ray_train_worker, worker_payload

    res = config.resources
    per_worker = {"CPU": res.cpus_per_worker * (1 - DRIVER_CPU)}
    if res.gpus_per_worker > 0:
        per_worker["GPU"] = res.gpus_per_worker
    trainer = TorchTrainer(
        ray_train_worker,
        train_loop_config=worker_payload(config, teacher, cache, res.gpus_per_worker, search=True),
        scaling_config=ScalingConfig(
            num_workers=res.workers_per_trial, use_gpu=res.gpus_per_worker > 0, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name=f"trial-{trial_id}",
            storage_path=storage,
            callbacks=[TuneReportCallback()],
            failure_config=train_failure_config(),
        ),
    )
    trainer.fit()
