"""Ray Train for ofasearch: the one ``TorchTrainer`` factory, its per-worker function, and
``ofasearch train --workers N``.

Both users of Ray Train go through :func:`torch_trainer`: a search trial with the ``ray-train``
backend (``ofasearch.search.trial``; every epoch reaches Tune through ``TuneReportCallback``)
and ``ofasearch train --workers N`` (:func:`train_on_ray`; rank 0 ships the student, metrics and
TensorBoard events back as the run's checkpoint, so the output folder is written on the driver
even on a multi-node cluster). Every worker runs the same loop as in-process training, under
DDP, on the device Ray Train gave it (``ray.train.torch.get_device()``).

``ofasearch train`` on Ray Train reports the loop state as a Ray checkpoint after every epoch: a
worker group restarted after a preemption, or the same run started again with ``--resume`` (Ray
Train V2 restores a run's checkpoints from its storage folder), continues from the last epoch.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from ofasearch.cluster.capacity import check_fits
from ofasearch.cluster.node import NODE_KEY, load_node_splits, node_name
from ofasearch.cluster.ray_session import ensure_ray
from ofasearch.cluster.shipping import receive_teacher, shipment
from ofasearch.config import TrainConfig
from ofasearch.distill import OFADistiller
from ofasearch.errors import SpecError
from ofasearch.training.job import fit_for_search, train_worker
from ofasearch.training.logit_cache import LogitCache
from ofasearch.training.loop import EpochReport, LoopState
from ofasearch.training.run_folder import CHECKPOINTS, FINISHED_MARKERS, STATE_FILE, read_state
from ofasearch.training.teacher import TeacherInfo
from ofasearch.utils.storage import Location, as_location, ray_storage

__all__ = ["per_worker_resources", "ray_train_worker", "torch_trainer", "train_on_ray", "worker_payload"]

logger = logging.getLogger(__name__)


def worker_payload(
    config: TrainConfig, shipped: dict[str, Any], *, search: bool, resume_from: Path | None = None
) -> dict[str, Any]:
    """What a Ray Train worker needs: the config and the teacher's :func:`shipment` (its files in
    Ray's object store: each node keeps one copy, no shared disk needed). ``search``: report every
    epoch to Tune instead of writing an output folder. ``resume_from``: a loop state file to start
    from when Ray has no checkpoint of the run (every worker reads it)."""
    return {
        "config": config.model_dump(mode="json"),
        "shipment": shipped,
        "search": search,
        "resume_from": str(resume_from) if resume_from else None,
    }


def _start_state(payload: dict[str, Any]) -> LoopState | None:
    """Where this worker starts: Ray's latest checkpoint of the run (after a preemption, or a run
    started again with ``--resume``), else the state file the driver named, else epoch 0."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            for rel in (STATE_FILE, f"{CHECKPOINTS}/{STATE_FILE}"):
                if (Path(folder) / rel).is_file():
                    return read_state(Path(folder) / rel)
    if payload.get("resume_from"):
        return read_state(Path(payload["resume_from"]))
    return None


def ray_train_worker(payload: dict[str, Any]) -> None:
    """Ray Train's per-worker function. For a search trial every epoch is reported (Tune sees it
    through TuneReportCallback); for ``ofasearch train`` rank 0 ships the outputs as the final
    checkpoint."""
    config = TrainConfig.model_validate(payload["config"])
    teacher, cache = receive_teacher(payload["shipment"])
    # As many threads as an in-process run or a local trial of this config (results depend on it)
    torch.set_num_threads(max(1, int(config.resources.cpus_per_worker)))
    device = ray.train.torch.get_device()
    splits = load_node_splits(config.data)
    if payload["search"]:
        node = node_name()

        def report(metrics: dict[str, Any], **kwargs: Any) -> None:
            ray.train.report({**metrics, NODE_KEY: node}, **kwargs)

        fit_for_search(config, splits, teacher, report, cache=cache, device=device)
        return
    epochs = int(config.optim.epochs)
    rank0 = ray.train.get_context().get_world_rank() == 0
    out = Path(tempfile.mkdtemp(prefix="ofasearch-train-"))

    def report_epoch(entry: EpochReport, _distiller: OFADistiller) -> None:
        if entry.epoch < epochs and not entry.diverged:  # the last report carries the outputs
            # rank 0 wrote this epoch's loop state before the report: it becomes Ray's checkpoint
            state = ray.train.Checkpoint.from_directory(str(out / CHECKPOINTS)) if rank0 else None
            ray.train.report(entry.as_metrics(), checkpoint=state)

    try:
        summary = train_worker(
            config,
            splits,
            teacher,
            out,
            cache=cache,
            device=device,
            on_epoch=report_epoch,
            resume=_start_state(payload),
        )
        last = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and v is not None}
        if rank0:
            ray.train.report(last, checkpoint=ray.train.Checkpoint.from_directory(str(out)))
        else:
            ray.train.report(last)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def per_worker_resources(workers: int, cpus_per_worker: float, gpus_per_worker: float, driver_cpus: float) -> dict:
    """Each worker's Ray resources, so that the whole run (a driver holding ``driver_cpus`` of
    Ray's CPUs, e.g. a Tune trial's process, plus its workers) takes ``workers x cpus_per_worker``
    CPUs: the driver's share comes off the workers evenly."""
    resources: dict[str, float] = {"CPU": cpus_per_worker - driver_cpus / workers}
    if gpus_per_worker > 0:
        resources["GPU"] = gpus_per_worker
    return resources


def torch_trainer(
    payload: dict[str, Any],
    *,
    name: str,
    storage_path: str,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    driver_cpus: float = 0.0,
    callbacks: Sequence[Any] = (),
) -> TorchTrainer:
    """The one TorchTrainer ofasearch builds: :func:`ray_train_worker` on ``workers`` DDP workers
    (gloo on CPUs, NCCL on GPUs), retried only after a preemption (``train_failure_config``)."""
    resources = per_worker_resources(workers, cpus_per_worker, gpus_per_worker, driver_cpus)
    path, filesystem = ray_storage(as_location(storage_path))  # a path, or an object store's URI
    return TorchTrainer(
        ray_train_worker,
        train_loop_config=payload,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=path,
            storage_filesystem=filesystem,
            callbacks=list(callbacks),
            failure_config=train_failure_config(),
            checkpoint_config=CheckpointConfig(num_to_keep=2),  # the latest epoch's state (and the one before)
        ),
    )


def _remove_run(folder: Location) -> None:
    """Delete a finished Ray Train run's folder (its checkpoint is in the output folder now)."""
    if isinstance(folder, Path):
        shutil.rmtree(folder, ignore_errors=True)
        return
    path, filesystem = ray_storage(folder)
    try:
        filesystem.delete_dir(path)
    except OSError as exc:
        logger.info(f"could not remove {folder}: {exc}")


def train_on_ray(
    config: TrainConfig,
    output: Path,
    teacher: TeacherInfo | None,
    cache: LogitCache | None,
    *,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float = 0.0,
    storage: str | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """``ofasearch train --workers N``: DDP on Ray Train (joining or starting Ray), the outputs
    copied from rank 0's checkpoint into ``output``. Returns the metrics summary. ``storage``: where
    Ray Train keeps the run (a path every node sees, or an object store URI); by default next to
    ``output``, which on a cluster without a shared disk only works when rank 0 runs here. The run
    folder there holds the epoch checkpoints: ``resume`` continues from them (or from
    ``output/checkpoints/last.pth`` of an in-process run); without it an old one is removed first,
    so a new run never continues an old one by surprise."""
    run_root = as_location(storage) if storage else output.parent / f".{output.name}-ray"
    run_folder = run_root / f"train-{output.name}"
    resume_from = _resume_source(output, run_folder) if resume else None
    if not resume and run_folder.exists():
        _remove_run(run_folder)
    ensure_ray()
    resources = per_worker_resources(workers, cpus_per_worker, gpus_per_worker, driver_cpus=0.0)
    check_fits(resources, workers, "train")
    trainer = torch_trainer(
        worker_payload(config, shipment(teacher, cache), search=False, resume_from=resume_from),
        name=f"train-{output.name}",
        storage_path=str(run_root),
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
    )
    logger.info(f"Ray Train: {workers} workers x {resources} ({'nccl' if gpus_per_worker > 0 else 'gloo'})")
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train finished without a checkpoint: {result.error}")
    output.mkdir(parents=True, exist_ok=True)
    result.checkpoint.to_directory(str(output))  # through the checkpoint's own filesystem
    _remove_run(run_root / f"train-{output.name}" if storage else run_root)
    return json.loads((output / "metrics.json").read_text())


def _resume_source(output: Path, run_folder: Location) -> Path | None:
    """What ``--resume`` continues on Ray Train: the newest of Ray's own checkpoints in a local
    ``run_folder`` (on object storage, None: left to Ray's own restore, which no test covers yet),
    else an in-process run's state file; neither is a one-line SpecError."""
    finished = [name for name in FINISHED_MARKERS if (output / name).exists()]
    if finished:
        raise SpecError([f"--resume: {output} holds a finished run ({', '.join(finished)}); nothing to resume"])
    if isinstance(run_folder, Path):
        # A new TorchTrainer of the same name does not pick up the killed run's checkpoints by
        # itself: every worker is pointed at the newest one's state file.
        saved = list(run_folder.glob(f"checkpoint_*/{STATE_FILE}"))
        if saved:
            return max(saved, key=lambda path: path.stat().st_mtime)
    elif run_folder.exists():
        return None
    state = output / CHECKPOINTS / STATE_FILE
    if state.is_file():
        return state
    raise SpecError([f"--resume: no checkpoint of {output} (neither Ray Train's in {run_folder} nor {state})"])


# Ray Train re-runs a run whose workers were lost to a node preemption (the retry can help) at
# most this often; errors raised by the training itself (OOM, bad data) are never retried, and a
# NaN loss is not an error at all (the trial ends `diverged`).
PREEMPTION_RETRIES = 3


def train_failure_config() -> FailureConfig:
    """Ray Train's retry policy for ofasearch runs: lost (preempted) workers only; a stuck worker
    group start becomes an error after 3 controller failures instead of hanging."""
    return FailureConfig(max_failures=0, max_preemption_failures=PREEMPTION_RETRIES, controller_failure_limit=3)
