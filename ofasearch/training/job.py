"""``ofasearch train`` in this process, the per-process training every path shares, and a
search trial's fit.

Every path ends in :func:`_fit_config` (the distiller from the config, the student's cost, the
one loop): ``ofasearch train`` (:func:`train`, or on Ray Train through
``ofasearch.cluster.trainer``, whose workers run :func:`train_worker`), and search trials
(:func:`fit_for_search`). Nothing here knows Ray: the device, the report function and the
output folder come from the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ofasearch.config import TrainConfig
from ofasearch.config.registry import get_method
from ofasearch.data import Splits
from ofasearch.distill import OFADistiller
from ofasearch.training.artifacts import RunFolder, prepare_output, summarize
from ofasearch.training.costs import measure_cost
from ofasearch.training.logit_cache import LogitCache
from ofasearch.training.loop import EpochReport, FitResult, fit, pick_device
from ofasearch.training.teacher import TeacherInfo, build_teacher, prepare_logit_cache, prepare_teacher

__all__ = [
    "build_distiller",
    "fit_for_search",
    "input_normalization",
    "log_summary",
    "prepare_teacher_and_cache",
    "train",
    "train_worker",
]

logger = logging.getLogger(__name__)

EpochHook = Callable[[EpochReport, OFADistiller], None]


def build_distiller(
    config: TrainConfig, splits: Splits, teacher: TeacherInfo | None, cache: LogitCache | None = None
) -> OFADistiller:
    """Student (seeded), frozen teacher and exit branches for this config and data. With a
    logit cache the teacher is not even built: only its feature width is needed."""
    wants_teacher = get_method(config.distill.method).teacher and teacher is not None and cache is None
    teacher_model = build_teacher(config.pair.teacher, teacher, splits) if wants_teacher else None
    return OFADistiller.from_config(
        config,
        teacher_model,
        teacher_features=cache.teacher_features if cache is not None else None,
        mean_std=input_normalization(config, splits),
        **splits.model_args,
    )


def input_normalization(config: TrainConfig, splits: Splits) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """One mean/std for both models (``augment.normalize: dataset``, the paper's CIFAR setting);
    None: each model its own timm normalisation."""
    return (splits.mean, splits.std) if config.augment.normalize == "dataset" else None


def prepare_teacher_and_cache(
    config: TrainConfig, splits: Splits, *, gpus: float = 0.0, progress: bool = True
) -> tuple[TeacherInfo | None, LogitCache | None]:
    """The run's teacher (trained once and stored for ``checkpoint: auto``) and its logit cache,
    made once in the driver before any worker starts; (None, None) for the student alone."""
    logger.info(
        f"data: {config.data.dataset} train {len(splits.train)} / val {len(splits.val)} / test "
        f"{len(splits.test)} images of {splits.input_size}; scores: {config.data.protocol}"
    )
    if not get_method(config.distill.method).teacher:
        return None, None
    teacher = prepare_teacher(config.pair.teacher, config.data, splits, gpus=gpus, progress=progress)
    cache = prepare_logit_cache(
        config.pair.teacher,
        teacher,
        config.data,
        splits,
        config.distill,
        config.augment,
        seed=config.seed,
        epochs=int(config.optim.epochs),
        gpus=gpus,
        progress=progress,
    )
    return teacher, cache


def train(
    config: TrainConfig,
    splits: Splits,
    output: Path,
    *,
    teacher: TeacherInfo | None,
    cache: LogitCache | None,
    gpus: float = 0.0,
    cpus: float = 1.0,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run ``config`` at full budget in this process and write ``output``: config.yaml,
    student.safetensors, metrics.json, tensorboard/. Returns the metrics summary. A finished run
    in ``output`` is a SpecError unless ``overwrite`` (then its files are replaced)."""
    prepare_output(output, overwrite=overwrite)
    # As many threads as a search trial had (float reductions, hence results, depend on it):
    # best.yaml then reproduces its trial exactly; raise resources.cpus_per_worker for speed.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus)))
    try:
        return train_worker(config, splits, teacher, output, cache=cache, device=pick_device(gpus), progress=progress)
    finally:
        torch.set_num_threads(threads)


def log_summary(config: TrainConfig, summary: dict[str, Any], output: Path) -> None:
    test_acc = summary["test_acc"]
    logger.info(
        f"student {config.pair.student.label} ({config.distill.method}): val_acc {summary['val_acc']:.4f} "
        f"test_acc {test_acc if test_acc is None else round(test_acc, 4)} "
        f"in {summary['train_seconds']:.1f}s; written to {output}"
    )
    if config.data.paper_protocol:
        logger.info(f"scores: {config.data.protocol}")


def train_worker(
    config: TrainConfig,
    splits: Splits,
    teacher: TeacherInfo | None,
    out_dir: Path,
    *,
    device: torch.device,
    cache: LogitCache | None = None,
    progress: bool = False,
    on_epoch: EpochHook | None = None,
) -> dict[str, Any]:
    """Train on this process (one DDP rank or alone); rank 0 writes student, metrics and events
    into ``out_dir``. Returns the metrics summary (on every rank)."""
    folder = RunFolder(out_dir) if not dist.is_initialized() or dist.get_rank() == 0 else None

    def report(entry: EpochReport, distiller: OFADistiller, _cost: dict[str, Any]) -> None:
        if folder is not None:
            folder.log_epoch(entry)
        if on_epoch is not None:
            on_epoch(entry, distiller)

    result, cost = _fit_config(config, splits, teacher, cache, device=device, report=report, progress=progress)
    summary = summarize(config, result, teacher, cost, teacher_cache=cache is not None)
    if folder is not None:
        folder.finish(config, summary, result.distiller.student)
    return summary


def fit_for_search(
    config: TrainConfig,
    splits: Splits,
    teacher: TeacherInfo | None,
    report: Callable[[dict[str, Any]], None],
    *,
    cache: LogitCache | None = None,
    gpus: float = 0.0,
    device: torch.device | None = None,
) -> FitResult:
    """A search trial's training: same loop, every epoch's metrics to ``report`` (with whether
    the logit cache was used and the student's cost, so even an ASHA-stopped trial has it), no
    test split (a search never scores on test) and no files. ``device`` (a Ray Train worker's)
    wins over ``gpus``."""
    result, _cost = _fit_config(
        config,
        splits,
        teacher,
        cache,
        device=device or pick_device(gpus),
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
    device: torch.device,
    report: Callable[[EpochReport, OFADistiller, dict[str, Any]], None],
    **fit_kwargs: Any,
) -> tuple[FitResult, dict[str, Any]]:
    """Build the distiller of ``config``, measure its bare student (rank 0 only: the one whose
    numbers are reported; other ranks get ``{}``) and train it with the one loop (every path ends
    here). ``report`` also receives the cost metrics. Returns the fit result and those metrics."""
    distiller = build_distiller(config, splits, teacher, cache)
    cost: dict[str, Any] = {}
    if not dist.is_initialized() or dist.get_rank() == 0:
        distiller.student.to(device)
        cost = measure_cost(distiller.student, splits.input_size, device).as_metrics()
    result = fit(
        distiller,
        splits,
        config.optim,
        seed=config.seed,
        device=device,
        logit_cache=cache,
        augment=config.augment,
        report=lambda entry, d: report(entry, d, cost),
        **fit_kwargs,
    )
    return result, cost
