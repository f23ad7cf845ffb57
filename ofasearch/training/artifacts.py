"""What a training run leaves in its output folder: ``student.safetensors``, ``metrics.json``,
``config.yaml`` and ``tensorboard/`` (per-epoch scalars and the run's hyperparameters).

Only rank 0 writes (:class:`RunFolder`); every rank computes the same summary.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors.torch import save_model
from torch import nn

from ofasearch.config import TrainConfig
from ofasearch.errors import SpecError
from ofasearch.training.loop import EpochReport, FitResult
from ofasearch.training.teacher import TeacherInfo
from ofasearch.utils.files import atomic_write

__all__ = ["RUN_ENTRIES", "RunFolder", "hparams", "prepare_output", "summarize", "write_student"]

logger = logging.getLogger(__name__)

STUDENT_FILE = "student.safetensors"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
EVENTS_FOLDER = "tensorboard"
RUN_ENTRIES = (STUDENT_FILE, METRICS_FILE, CONFIG_FILE, EVENTS_FOLDER)  # everything a run writes
FINISHED_MARKERS = (METRICS_FILE, STUDENT_FILE)  # a folder holding one of these is a finished run


def write_student(student: nn.Module, path: Path) -> None:
    """Student weights only, loadable with ``timm.create_model(name, **kwargs).load_state_dict``."""
    save_model(student, str(path))


def summarize(
    config: TrainConfig,
    result: FitResult,
    teacher: TeacherInfo | None,
    cost: dict[str, Any],
    *,
    teacher_cache: bool,
) -> dict[str, Any]:
    """``metrics.json``: accuracies, time, the student's cost, the teacher's scores and every
    epoch's report."""
    last = result.history[-1] if result.history else None
    return {
        "protocol": config.data.protocol,
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
        "teacher_cache": teacher_cache,
    }


def hparams(config: TrainConfig) -> dict[str, Any]:
    """The run's settings as TensorBoard's HParams tab shows them (scalars and strings only)."""
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


def prepare_output(output: Path, *, overwrite: bool) -> None:
    """Make ``output`` ready for a new run before any training: a finished run there is never
    overwritten silently (exit 2), and with ``overwrite`` every file it wrote goes first, its
    TensorBoard events included, so the new run's events are never mixed with the old ones.
    Other files the user keeps there are left alone."""
    if output.exists() and not output.is_dir():
        raise SpecError([f"--output: {output} is a file, not a folder; choose a folder"])
    finished = [name for name in FINISHED_MARKERS if (output / name).exists()]
    if not finished:
        return
    if not overwrite:
        raise SpecError(
            [
                f"--output: {output} holds a finished run ({', '.join(finished)}); choose another --output, "
                "or add --overwrite to replace it"
            ]
        )
    logger.warning(f"--overwrite: replacing the run in {output} (student, metrics, config, tensorboard/)")
    for name in RUN_ENTRIES:
        path = output / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


class RunFolder:
    """The output folder of one run, opened on rank 0: TensorBoard events while training, the
    student, metrics and config at the end."""

    def __init__(self, out_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self._events = SummaryWriter(str(out_dir / EVENTS_FOLDER))

    def log_epoch(self, entry: EpochReport) -> None:
        for key, value in entry.as_metrics().items():
            self._events.add_scalar(key, float(value), entry.epoch)
        self._events.flush()

    def finish(self, config: TrainConfig, summary: dict[str, Any], student: nn.Module) -> None:
        """Write student, metrics and config; close the events file with the run's hparams."""
        write_student(student, self.out_dir / STUDENT_FILE)
        atomic_write(self.out_dir / METRICS_FILE, json.dumps(summary, indent=2))
        atomic_write(self.out_dir / CONFIG_FILE, config.to_yaml())
        self._events.add_hparams(hparams(config), {"hparam/val_acc": summary["val_acc"]}, run_name=".")
        self._events.close()
