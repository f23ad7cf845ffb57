"""What a training run leaves in its output folder: ``student.safetensors`` (the best validation
epoch's weights), ``config.json`` (how to build and feed that student, in timm's format),
``metrics.json``, ``config.yaml``, ``tensorboard/`` (per-epoch scalars and the run's
hyperparameters) and ``checkpoints/`` (the last epoch's student, and the loop state that
``ofasearch train --resume`` continues from, rewritten atomically after every epoch).

Only rank 0 writes (:class:`RunFolder`); every rank computes the same summary.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file, save_model
from torch import nn

from ofasearch.config import TrainConfig
from ofasearch.errors import SpecError
from ofasearch.models.portable import EXPORT_FILES
from ofasearch.models.student_folder import CARD_FILE, STUDENT_FILE, save_student
from ofasearch.training.loop import EpochReport, FitResult, LoopState
from ofasearch.training.teacher import TeacherInfo
from ofasearch.utils.files import atomic_write, cached_file_digest
from ofasearch.utils.versions import package_versions

__all__ = [
    "RUN_ENTRIES",
    "RunFolder",
    "hparams",
    "prepare_output",
    "read_state",
    "resume_state",
    "summarize",
    "write_student",
]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
EVENTS_FOLDER = "tensorboard"
CHECKPOINTS = "checkpoints"
STATE_FILE = "last.pth"  # in CHECKPOINTS: the loop state after the last finished epoch
LAST_STUDENT = "student_last.safetensors"  # in CHECKPOINTS: the last epoch's student weights
EXPORTS = tuple(EXPORT_FILES.values())  # written by `ofasearch train --export`
# everything a run writes
RUN_ENTRIES = (STUDENT_FILE, CARD_FILE, METRICS_FILE, CONFIG_FILE, EVENTS_FOLDER, CHECKPOINTS, *EXPORTS)
FINISHED_MARKERS = (METRICS_FILE, STUDENT_FILE)  # a folder holding one of these is a finished run


def write_student(student: nn.Module, path: Path) -> None:
    """Student weights only, loadable with ``timm.create_model(name, **kwargs).load_state_dict``."""
    save_model(student, str(path))


def read_state(path: Path) -> LoopState:
    """A loop state written by :meth:`RunFolder.save_state` (tensors and containers only); a
    damaged file is a one-line SpecError naming it."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError([f"--resume: {path} cannot be read ({reason}); train again without --resume"]) from None


def resume_state(output: Path, config: TrainConfig) -> LoopState:
    """The loop state ``ofasearch train --resume`` continues from: the checkpoint of an unfinished
    run in ``output`` that was started with this same config."""
    finished = [name for name in FINISHED_MARKERS if (output / name).exists()]
    if finished:
        raise SpecError([f"--resume: {output} holds a finished run ({', '.join(finished)}); nothing to resume"])
    path = output / CHECKPOINTS / STATE_FILE
    if not path.is_file():
        raise SpecError([f"--resume: no checkpoint in {output} ({CHECKPOINTS}/{STATE_FILE}); train without --resume"])
    state = read_state(path)
    check_same_config(state, config, path)
    return state


def check_same_config(state: LoopState, config: TrainConfig, path: Path | str) -> None:
    """A checkpoint continues only the config it was made with (same data, models, schedule)."""
    saved = state.get("config")
    if saved is None or saved == config.to_yaml():
        return
    import yaml

    old, new = yaml.safe_load(saved), config.model_dump(mode="json", exclude_none=True)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    raise SpecError(
        [
            f"--resume: the checkpoint {path} was made with another config ({', '.join(changed)} differ); "
            "resume with the config it was started with, or train again without --resume"
        ]
    )


def teacher_digest(teacher: TeacherInfo | None) -> str | None:
    """The SHA-256 of the teacher's file (recorded, or hashed now for a user's checkpoint)."""
    if teacher is None or teacher.checkpoint is None:
        return None
    return teacher.sha256 or cached_file_digest(teacher.checkpoint)


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
        "best_epoch": result.best_epoch,
        "val_acc_last": last.val_acc if last else 0.0,
        "test_acc": result.test_acc,
        "test_acc_last": result.test_acc_last,
        "epochs": len(result.history),
        "resumed_from_epoch": result.resumed_from,  # 0: trained in one go
        "train_seconds": result.train_seconds,
        "diverged": result.diverged,
        "method": config.distill.method,
        "teacher": config.pair.teacher.label,
        "student": config.pair.student.label,
        "student_params": sum(p.numel() for p in result.distiller.student.parameters()),
        # the teacher by content: the file it was loaded from and its SHA-256 (None: hub weights)
        "teacher_checkpoint": teacher.checkpoint if teacher else None,
        "teacher_sha256": teacher_digest(teacher),
        "teacher_val_acc": teacher.val_acc if teacher else None,
        "teacher_test_acc": teacher.test_acc if teacher else None,
        **cost,
        "history": [asdict(h) for h in result.history],
        "teacher_cache": teacher_cache,
        "versions": package_versions(),
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


def prepare_output(output: Path, *, overwrite: bool, resume: bool = False) -> None:
    """Make ``output`` ready for a run before any training: a finished run there is never
    overwritten silently (exit 2), and with ``overwrite`` every file it wrote goes first, its
    TensorBoard events included, so the new run's events are never mixed with the old ones. The
    leftovers of an unfinished run are removed too (with a warning) unless ``resume`` continues it.
    Other files the user keeps there are left alone."""
    if output.exists() and not output.is_dir():
        raise SpecError([f"--output: {output} is a file, not a folder; choose a folder"])
    if resume:
        return
    finished = [name for name in FINISHED_MARKERS if (output / name).exists()]
    if finished and not overwrite:
        raise SpecError(
            [
                f"--output: {output} holds a finished run ({', '.join(finished)}); choose another --output, "
                "or add --overwrite to replace it"
            ]
        )
    if finished:
        logger.warning(f"--overwrite: replacing the run in {output} ({', '.join(RUN_ENTRIES)})")
    elif (output / CHECKPOINTS / STATE_FILE).exists():
        logger.warning(f"{output} holds an unfinished run: starting over (--resume continues it instead)")
    else:
        return
    for name in RUN_ENTRIES:
        path = output / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


class RunFolder:
    """The output folder of one run, opened on rank 0: TensorBoard events and the loop state
    while training, the student, its card, metrics and config at the end. ``history``: the epochs
    a resumed run already has (its events are written again, so none is missing or doubled)."""

    def __init__(self, out_dir: Path, history: list[EpochReport] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        if history is not None and (out_dir / EVENTS_FOLDER).is_dir():
            shutil.rmtree(out_dir / EVENTS_FOLDER)
        self._events = SummaryWriter(str(out_dir / EVENTS_FOLDER))
        for entry in history or ():
            self.log_epoch(entry)

    def log_epoch(self, entry: EpochReport) -> None:
        for key, value in entry.as_metrics().items():
            self._events.add_scalar(key, float(value), entry.epoch)
        self._events.flush()

    def save_state(self, state: LoopState, config: TrainConfig) -> Path:
        """``checkpoints/last.pth``, replaced atomically: a kill at any moment leaves the previous
        epoch's state or this one, never a torn file."""
        buffer = io.BytesIO()
        torch.save({**state, "config": config.to_yaml()}, buffer)
        return atomic_write(self.out_dir / CHECKPOINTS / STATE_FILE, buffer.getvalue())

    def finish(
        self, config: TrainConfig, summary: dict[str, Any], result: FitResult, model_args: dict[str, int]
    ) -> None:
        """Write the student (best epoch), the last epoch's student, the card, metrics and
        config; close the events file with the run's hparams."""
        files = {}
        if result.last_state is not None:
            last = self.out_dir / CHECKPOINTS / LAST_STUDENT
            last.parent.mkdir(exist_ok=True)
            save_file({k: v.contiguous() for k, v in result.last_state.items()}, str(last))
            files[f"{CHECKPOINTS}/{LAST_STUDENT}"] = last
        spec = config.pair.student
        crop_pct, interpolation = config.augment.eval_cut or (None, "bilinear")  # the cut the scores saw
        save_student(
            self.out_dir,
            result.distiller.student,
            spec.model,
            spec.kwargs,
            **model_args,
            more_files=files,
            # what training normalised with (the model's timm mean/std, or the dataset's)
            mean_std=(
                result.distiller.student_mean.flatten().tolist(),
                result.distiller.student_std.flatten().tolist(),
            ),
            crop_pct=crop_pct,
            interpolation=interpolation,
            extra={
                "val_acc": summary["val_acc"],
                "test_acc": summary["test_acc"],
                "best_epoch": summary["best_epoch"],
                "epochs": summary["epochs"],
                "trained_from": config.name,
                "teacher": {
                    "model": config.pair.teacher.label,
                    "checkpoint": summary["teacher_checkpoint"],
                    "sha256": summary["teacher_sha256"],
                },
            },
        )
        atomic_write(self.out_dir / METRICS_FILE, json.dumps(summary, indent=2))
        atomic_write(self.out_dir / CONFIG_FILE, config.to_yaml())
        self._events.add_hparams(hparams(config), {"hparam/val_acc": summary["val_acc"]}, run_name=".")
        self._events.close()
