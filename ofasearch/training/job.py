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
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist

from ofasearch.config import TrainConfig
from ofasearch.config.registry import get_method
from ofasearch.data import Splits
from ofasearch.distill import OFADistiller
from ofasearch.errors import SpecError
from ofasearch.training.costs import measure_cost
from ofasearch.training.logit_cache import LogitCache
from ofasearch.training.loop import EpochReport, FitResult, LoopState, fit
from ofasearch.training.ranks import pick_device
from ofasearch.training.run_folder import RunFolder, check_same_config, prepare_output, resume_state, summarize
from ofasearch.training.speed import cpu_threads
from ofasearch.training.teacher import TeacherInfo, build_teacher, prepare_logit_cache, prepare_teacher

__all__ = [
    "RunResources",
    "build_distiller",
    "fit_for_search",
    "input_normalization",
    "log_summary",
    "prepare_teacher_and_cache",
    "resolve_resources",
    "train",
    "train_worker",
]

logger = logging.getLogger(__name__)

EpochHook = Callable[[EpochReport, OFADistiller], None]


@dataclass(frozen=True)
class RunResources:
    """What ``ofasearch train`` runs on: the config's ``resources``, each overridden by its flag."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float

    def describe(self) -> str:
        """One line for the log: where the run trains, and with how many threads."""
        threads = max(1, int(self.cpus_per_worker))
        device = f"{self.gpus_per_worker:g} GPU" if self.gpus_per_worker > 0 else "CPU"
        cores = os.cpu_count() or 1
        more = " (raise resources.cpus_per_worker or --cpus-per-worker for more)" if threads < cores else ""
        if self.workers == 1:
            return f"1 worker in this process on {device}, {threads} of {cores} CPU thread(s){more}"
        backend = "nccl" if self.gpus_per_worker > 0 else "gloo"
        return f"{self.workers} Ray Train workers x ({device}, {threads} thread(s)), DDP over {backend}"


def resolve_resources(
    config: TrainConfig,
    *,
    workers: int | None = None,
    cpus: float | None = None,
    gpus: float | Literal["auto"] | None = None,
) -> RunResources:
    """The config's ``resources`` (``workers_per_trial``, ``cpus_per_worker`` as torch threads,
    ``gpus_per_worker``, where ``auto`` is one GPU if CUDA sees one) with any given flag taking
    precedence. A GPU asked for in one process where CUDA has none is a one-line SpecError naming
    where the request came from."""
    res = config.resources
    wanted = res.gpus_per_worker if gpus is None else gpus
    chosen = RunResources(
        workers=res.workers_per_trial if workers is None else workers,
        cpus_per_worker=res.cpus_per_worker if cpus is None else cpus,
        # one run: nothing to pack, so auto is a whole GPU where this machine has one
        gpus_per_worker=(1.0 if torch.cuda.is_available() else 0.0) if wanted == "auto" else wanted,
    )
    if chosen.workers < 1:
        raise SpecError([f"--workers: {chosen.workers} is not allowed; must be >= 1"])
    if chosen.cpus_per_worker <= 0:
        raise SpecError([f"--cpus-per-worker: {chosen.cpus_per_worker:g} is not allowed; must be > 0"])
    if chosen.gpus_per_worker < 0:
        raise SpecError([f"--gpus-per-worker: {chosen.gpus_per_worker:g} is not allowed; must be >= 0"])
    if chosen.workers == 1 and chosen.gpus_per_worker > 0 and not torch.cuda.is_available():
        source = "--gpus-per-worker" if gpus is not None else "resources.gpus_per_worker"
        raise SpecError(
            [
                f"{source}: {chosen.gpus_per_worker:g} asked for, but CUDA sees no GPU on this machine; "
                "train on the CPU with --gpus-per-worker 0"
            ]
        )
    return chosen


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
    resume: bool = False,
) -> dict[str, Any]:
    """Run ``config`` at full budget in this process and write ``output``: config.yaml,
    student.safetensors, config.json, metrics.json, tensorboard/, checkpoints/. Returns the
    metrics summary. A finished run in ``output`` is a SpecError unless ``overwrite`` (then its
    files are replaced); ``resume`` continues the unfinished run there from its last epoch."""
    prepare_output(output, overwrite=overwrite, resume=resume)
    state = resume_state(output, config) if resume else None
    # As many threads as a search trial had (float reductions, hence results, depend on it):
    # best.yaml then reproduces its trial exactly; raise resources.cpus_per_worker for speed.
    with cpu_threads(cpus):
        return train_worker(
            config, splits, teacher, output, cache=cache, device=pick_device(gpus), progress=progress, resume=state
        )


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
    resume: LoopState | None = None,
) -> dict[str, Any]:
    """Train on this process (one DDP rank or alone), from the loop state ``resume`` when given;
    rank 0 writes events and, after every epoch, ``checkpoints/last.pth`` into ``out_dir``, then
    the best epoch's student, its card and the metrics. Returns the metrics summary (on every
    rank)."""
    history = None
    if resume is not None:
        check_same_config(resume, config, out_dir)
        history = [EpochReport(**h) for h in resume["history"]]
        logger.info(f"resuming {out_dir} after epoch {resume['epoch']} of {config.optim.epochs}")
    folder = RunFolder(out_dir, history=history) if not dist.is_initialized() or dist.get_rank() == 0 else None

    def report(entry: EpochReport, distiller: OFADistiller, _cost: dict[str, Any]) -> None:
        if folder is not None:
            folder.log_epoch(entry)
        if on_epoch is not None:
            on_epoch(entry, distiller)

    def save_state(state: LoopState) -> None:
        if folder is not None:
            folder.save_state(state, config)

    result, cost = _fit_config(
        config,
        splits,
        teacher,
        cache,
        device=device,
        report=report,
        progress=progress,
        keep_best=True,
        resume=resume,
        save_state=save_state,
    )
    summary = summarize(config, result, teacher, cost, teacher_cache=cache is not None)
    if folder is not None:
        folder.finish(config, summary, result, splits.model_args)
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
