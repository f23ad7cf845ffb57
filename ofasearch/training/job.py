"""``ofasearch train``: one full-budget run of a train config, in process or on Ray Train.

Both paths run :func:`ofasearch.train_loop.fit` through :func:`train_worker`; on Ray Train every
worker runs it under DDP and rank 0 ships the student, metrics and TensorBoard events back as the
run's checkpoint, so the output folder is written on the driver even on a multi-node cluster.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from ofasearch.config import TrainConfig
from ofasearch.data import Splits, load_splits
from ofasearch.distill import OFADistiller
from ofasearch.models import build_model
from ofasearch.training.costs import measure_cost
from ofasearch.training.logit_cache import LogitCache
from ofasearch.training.loop import EpochReport, FitResult, fit, pick_device, seed_everything
from ofasearch.training.teacher import TeacherInfo, build_teacher, prepare_logit_cache, prepare_teacher

__all__ = [
    "build_distiller",
    "fit_for_search",
    "ray_train_worker",
    "train",
    "train_worker",
    "worker_payload",
    "write_student",
]

logger = logging.getLogger(__name__)


def build_distiller(
    config: TrainConfig, splits: Splits, teacher: TeacherInfo | None, cache: LogitCache | None = None
) -> OFADistiller:
    """Student (seeded), frozen teacher and exit branches for this config and data. With a
    logit cache the teacher is not even built: only its feature width is needed. The seed is set
    after the teacher is built, so student and branches start the same with or without it."""
    pair, d = config.pair, config.distill
    wants_teacher = d.method != "none" and teacher is not None and cache is None
    teacher_model = build_teacher(pair.teacher, teacher, splits) if wants_teacher else None
    seed_everything(config.seed)
    student = build_model(
        pair.student.model,
        pair.student.kwargs,
        **splits.model_args,
    )
    return OFADistiller(
        student,
        teacher_model,
        splits.num_classes,
        stages=d.stages,
        eps=d.eps,
        temperature=d.temperature,
        gt_weight=d.gt_weight,
        kd_weight=d.kd_weight,
        ofa_weight=d.ofa_weight,
        input_size=splits.input_size,
        method=d.method,
        teacher_features=cache.teacher_features if cache is not None else None,
    )


def write_student(student: nn.Module, path: Path) -> None:
    """Student weights only, loadable with ``timm.create_model(name, **kwargs).load_state_dict``."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    save_file(state, str(path))


def _summary(
    config: TrainConfig, result: FitResult, teacher: TeacherInfo | None, cost: dict[str, Any]
) -> dict[str, Any]:
    last = result.history[-1] if result.history else None
    return {
        "val_acc": result.best_val_acc,
        "val_acc_last": last.val_acc if last else 0.0,
        "test_acc": result.test_acc,
        "epochs": len(result.history),
        "train_seconds": result.train_seconds,
        "diverged": result.diverged,
        "method": config.distill.method,
        "teacher": config.pair.teacher.label,
        "student": config.pair.student.label,
        "student_params": sum(p.numel() for p in result.distiller.student.parameters()),
        "teacher_val_acc": teacher.val_acc if teacher else None,
        "teacher_test_acc": teacher.test_acc if teacher else None,
        **cost,
        "history": [asdict(h) for h in result.history],
    }


def train_worker(
    config: TrainConfig,
    splits: Splits,
    teacher: TeacherInfo | None,
    out_dir: Path,
    *,
    cache: LogitCache | None = None,
    gpus: float = 0.0,
    progress: bool = False,
    on_epoch: Callable[[EpochReport, OFADistiller], None] | None = None,
) -> dict[str, Any]:
    """Train on this process (one DDP rank or alone); rank 0 writes student, metrics and events
    into ``out_dir``. Returns the metrics summary."""
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        out_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(out_dir / "tensorboard"))

    def report(entry: EpochReport, d: OFADistiller, _cost: dict[str, Any]) -> None:
        if writer is not None:
            for key, value in entry.as_metrics().items():
                writer.add_scalar(key, float(value), entry.epoch)
            writer.flush()
        if on_epoch is not None:
            on_epoch(entry, d)

    result, cost = _fit_config(config, splits, teacher, cache, gpus=gpus, report=report, progress=progress)
    distiller = result.distiller
    summary = _summary(config, result, teacher, cost)
    summary["teacher_cache"] = cache is not None
    if rank == 0:
        write_student(distiller.student, out_dir / "student.safetensors")
        (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
        (out_dir / "config.yaml").write_text(config.to_yaml())
        assert writer is not None
        writer.add_hparams(_hparams(config), {"hparam/val_acc": summary["val_acc"]}, run_name=".")
        writer.close()
    return summary


def _hparams(config: TrainConfig) -> dict[str, Any]:
    d, o = config.distill, config.optim
    return {
        "teacher": config.pair.teacher.label,
        "student": config.pair.student.label,
        "method": d.method,
        "stages": ",".join(map(str, d.stages)) if d.stages else "all",
        "temperature": d.temperature,
        "eps": str(d.eps),
        "ofa_weight": d.ofa_weight,
        "kd_weight": d.kd_weight,
        "gt_weight": d.gt_weight,
        "lr": o.lr,
        "optimizer": o.name,
        "batch_size": o.batch_size,
        "epochs": o.epochs,
    }


def train(
    config: TrainConfig,
    output: Path,
    *,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``config`` at full budget and write ``output``: config.yaml, student.safetensors,
    metrics.json, tensorboard/. ``workers > 1`` runs DDP on Ray Train."""
    from ofasearch.search.plan import plan

    splits = load_splits(config.data)
    plan(config, splits=splits)  # stages, models and checkpoint checked before any training
    logger.info(
        f"data: {config.data.dataset} train {len(splits.train)} / val {len(splits.val)} / test "
        f"{len(splits.test)} images of {splits.input_size}"
    )
    teacher = cache = None
    if config.distill.method != "none":
        teacher = prepare_teacher(
            config.pair.teacher, config.data, splits, gpus=gpus_per_worker, progress=progress
        )
        cache = prepare_logit_cache(
            config.pair.teacher, teacher, config.data, splits, config.distill, seed=config.seed,
            epochs=int(config.optim.epochs), gpus=gpus_per_worker, progress=progress,
        )  # fmt: skip
    output = output.resolve()
    if workers <= 1:
        # As many threads as a search trial had (float reductions, hence results, depend on it):
        # best.yaml then reproduces its trial exactly; raise resources.cpus_per_worker for speed.
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, int(cpus_per_worker)))
        try:
            summary = train_worker(
                config, splits, teacher, output, cache=cache, gpus=gpus_per_worker, progress=progress
            )
        finally:
            torch.set_num_threads(threads)
    else:
        payload = worker_payload(config, teacher, cache, gpus_per_worker, search=False)
        summary = _train_on_ray(payload, output, workers, gpus_per_worker, cpus_per_worker)
    logger.info(
        f"student {config.pair.student.label} ({config.distill.method}): val_acc {summary['val_acc']:.4f} "
        f"test_acc {summary['test_acc'] if summary['test_acc'] is None else round(summary['test_acc'], 4)} "
        f"in {summary['train_seconds']:.1f}s; written to {output}"
    )
    return summary


def fit_for_search(
    config: TrainConfig,
    splits: Splits,
    teacher: TeacherInfo | None,
    report: Callable[[dict[str, Any]], None],
    *,
    cache: LogitCache | None = None,
    gpus: float = 0.0,
) -> FitResult:
    """A search trial's training: same loop, every epoch's metrics to ``report`` (with whether
    the logit cache was used and the student's cost, so even an ASHA-stopped trial has it), no
    test split (a search never scores on test) and no files."""
    result, _cost = _fit_config(
        config,
        splits,
        teacher,
        cache,
        gpus=gpus,
        report=lambda entry, _d, cost: report({**entry.as_metrics(), "teacher_cache": cache is not None, **cost}),
        evaluate_test=False,
    )
    return result


def _fit_config(
    config: TrainConfig,
    splits: Splits,
    teacher: TeacherInfo | None,
    cache: LogitCache | None,
    *,
    gpus: float,
    report: Callable[[EpochReport, OFADistiller, dict[str, Any]], None],
    **fit_kwargs: Any,
) -> tuple[FitResult, dict[str, Any]]:
    """Build the distiller of ``config``, measure its bare student (rank 0 only: the one whose
    numbers are reported; other ranks get ``{}``) and train it with the one loop (every path ends
    here). ``report`` also receives the cost metrics. Returns the fit result and those metrics."""
    import torch.distributed as dist

    distiller = build_distiller(config, splits, teacher, cache)
    device = pick_device(gpus)
    cost: dict[str, Any] = {}
    if not dist.is_initialized() or dist.get_rank() == 0:
        distiller.student.to(device)
        cost = measure_cost(distiller.student, splits.input_size, device).as_metrics()
    result = fit(
        distiller,
        splits,
        config.distill,
        config.optim,
        seed=config.seed,
        device=device,
        logit_cache=cache,
        report=lambda entry, d: report(entry, d, cost),
        **fit_kwargs,
    )
    return result, cost


def ray_train_worker(payload: dict[str, Any]) -> None:
    """Ray Train's per-worker function. For a search trial every epoch is reported (Tune sees it
    through TuneReportCallback); for ``ofasearch train`` rank 0 ships the outputs as the final
    checkpoint."""
    import ray.train

    config = TrainConfig.model_validate(payload["config"])
    teacher = TeacherInfo(**payload["teacher"]) if payload["teacher"] else None
    cache = LogitCache(**payload["cache"]) if payload.get("cache") else None
    splits = load_splits(config.data)
    if payload.get("search"):
        fit_for_search(config, splits, teacher, ray.train.report, cache=cache, gpus=payload["gpus"])
        return
    rank = ray.train.get_context().get_world_rank()
    out = Path(tempfile.mkdtemp(prefix="ofasearch-train-"))
    epochs = int(config.optim.epochs)

    def on_epoch(entry: EpochReport, _d: OFADistiller) -> None:
        if entry.epoch < epochs and not entry.diverged:
            ray.train.report(entry.as_metrics())

    summary = train_worker(config, splits, teacher, out, cache=cache, gpus=payload["gpus"], on_epoch=on_epoch)
    last = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and v is not None}
    if rank == 0:
        ray.train.report(last, checkpoint=ray.train.Checkpoint.from_directory(str(out)))
    else:
        ray.train.report(last)
    shutil.rmtree(out, ignore_errors=True)


def worker_payload(
    config: TrainConfig, teacher: TeacherInfo | None, cache: LogitCache | None, gpus: float, search: bool
) -> dict[str, Any]:
    """What a Ray Train worker needs: plain data only (it is pickled to every worker). The logit
    cache is passed by path: on a multi-node cluster ``$OFASEARCH_CACHE`` must be shared storage."""
    return {
        "config": config.model_dump(mode="json"),
        "teacher": asdict(teacher) if teacher else None,
        "cache": asdict(cache) if cache else None,
        "gpus": gpus,
        "search": search,
    }


def _train_on_ray(
    payload: dict[str, Any],
    output: Path,
    workers: int,
    gpus: float,
    cpus: float,
) -> dict[str, Any]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ofasearch.cluster.ray_session import check_fits, ensure_ray, train_failure_config

    ensure_ray()
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}
    check_fits(resources, workers, "train")
    trainer = TorchTrainer(
        ray_train_worker,
        train_loop_config=payload,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources),
        run_config=RunConfig(
            name=f"train-{output.name}",
            storage_path=str(output.parent / f".{output.name}-ray"),
            failure_config=train_failure_config(),
        ),
    )
    logger.info(f"Ray Train: {workers} workers x {resources} ({'nccl' if gpus > 0 else 'gloo'})")
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train finished without a checkpoint: {result.error}")
    output.mkdir(parents=True, exist_ok=True)
    result.checkpoint.to_directory(str(output))
    shutil.rmtree(output.parent / f".{output.name}-ray", ignore_errors=True)
    return json.loads((output / "metrics.json").read_text())
