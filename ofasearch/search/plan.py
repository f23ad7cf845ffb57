"""Validate a spec or config the way a run will see it, without training: load the data, build
every model once, measure each student's stages, check the stage choices and checkpoint files.

``validate``, ``run`` and ``train`` all call :func:`plan` first, so a bad input fails the same
way, in seconds, before a teacher is trained or Ray is started.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ofasearch.config import Constraints, Spec, TrainConfig
from ofasearch.data import Splits, load_splits
from ofasearch.errors import SpecError
from ofasearch.models import build_model, describe_model
from ofasearch.results.folder import SPEC_FILE
from ofasearch.results.tables import TRIALS_FILE
from ofasearch.search.space import SearchSpace
from ofasearch.training.costs import ModelCost, measure_cost
from ofasearch.training.speed import cpu_threads
from ofasearch.utils.files import cached_file_digest

__all__ = ["apply_constraints", "check_grace", "constraint_device", "forward_problem", "plan"]

# search.constraints field -> (what it measures, the student's value in a ModelCost)
_MEASURED = {
    "max_params": ("params", lambda cost: cost.params),
    "max_flops": ("flops", lambda cost: cost.flops),
    "max_latency_ms": ("latency_ms_b1", lambda cost: cost.latency(1)),
}

logger = logging.getLogger(__name__)


def check_warm_start(spec: Spec | TrainConfig) -> None:
    """A SpecError unless ``search.warm_start`` names a search's results folder with trials."""
    folder = spec.search.warm_start if isinstance(spec, Spec) else None  # train configs have no search
    if folder is None:
        return
    missing = [name for name in (SPEC_FILE, TRIALS_FILE) if not (Path(folder) / name).is_file()]
    if missing:
        raise SpecError([f"search.warm_start: {folder!r} is not an ofasearch search folder (no {', '.join(missing)})"])


def plan(spec: Spec, splits: Splits | None = None) -> SearchSpace:
    """Resolve everything without training: data, every model built once, stage choices checked,
    and students that miss ``search.constraints`` dropped (the returned space's spec lacks their
    pairs, so what a run writes to its folder is what it searches)."""
    constraints = None
    if not isinstance(spec, TrainConfig):
        check_grace(spec)
        constraints = spec.search.constraints
    costs: dict[str, ModelCost] = {}
    splits = splits or load_splits(spec.data)
    stages: list[list[int]] = []
    problems: list[str] = []
    built: dict[str, list[int]] = {}
    for i, pair in enumerate(spec.pairs):
        for role, model in (("teacher", pair.teacher), ("student", pair.student)):
            if model.label in built and role == "student":
                continue
            try:
                net = build_model(
                    model.model,
                    model.kwargs,
                    **splits.model_args,
                )
                problem = forward_problem(net, model.model, splits.input_size)
                if problem is not None:
                    problems.append(f"pairs[{i}].{role}: {problem}")
                elif role == "student":
                    built[model.label] = sorted(describe_model(net, splits.input_size).stage_shapes)
                    if constraints is not None:
                        costs[model.label] = _measure(net, splits.input_size, spec)
            except SpecError as exc:
                problems += [f"pairs[{i}].{role}: {p}" for p in exc.problems]
        stages.append(built.get(pair.student.label, []))
        logger.info(f"pair {i}: {pair.label}; student stages {stages[-1]}")
    for i, pair in enumerate(spec.pairs):
        checkpoint = pair.teacher.checkpoint
        if checkpoint not in (None, "auto") and not Path(checkpoint).is_file():
            problems.append(f"pairs[{i}].teacher.checkpoint: {checkpoint!r}: no such file")
        elif checkpoint not in (None, "auto") and pair.teacher.sha256:
            if cached_file_digest(checkpoint) != pair.teacher.sha256:  # pinned by `ofasearch export`
                problems.append(
                    f"pairs[{i}].teacher.sha256: {checkpoint!r} is not the pinned teacher (its SHA-256 differs); "
                    "restore that file, or remove sha256 to accept this one"
                )
    if problems:
        raise SpecError(problems)
    check_warm_start(spec)
    if constraints is not None:
        spec, stages = apply_constraints(spec, stages, costs, constraints)
    return SearchSpace(spec, stages)


def constraint_device(spec: Spec) -> torch.device:
    """The device type a trial trains on: a GPU when the spec gives workers one and the driver
    sees one, else the CPU (where latency is measured with the trial's thread count)."""
    gpus = spec.resources.gpus_per_worker
    wants_gpu = gpus == "auto" or gpus > 0
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def _measure(net: nn.Module, input_size: tuple[int, int, int], spec: Spec) -> ModelCost:
    """The student's cost as a trial would see it: params, FLOPs per image and the median of a few
    batch-1 forwards on the trial device type, with the trial's CPU thread count."""
    device = constraint_device(spec)
    try:
        with cpu_threads(spec.resources.cpus_per_worker):
            return measure_cost(net.to(device), input_size, device, batch_sizes=(1,), repeats=7, max_seconds=1.0)
    finally:
        net.cpu()


def apply_constraints(
    spec: Spec, stages: list[list[int]], costs: dict[str, ModelCost], constraints: Constraints
) -> tuple[Spec, list[list[int]]]:
    """Keep the pairs whose student meets every limit: one line per student measured (kept or
    dropped, with value and limit); a SpecError when no student is left."""
    limits = constraints.limits()
    dropped: dict[str, list[str]] = {}
    for label, cost in costs.items():
        values = {name: get(cost) for name, (_, get) in _MEASURED.items() if name in limits}
        shown = ", ".join(f"{what} {_fmt(get(cost))}" for what, get in _MEASURED.values())
        over = [
            f"{_MEASURED[n][0]} {_fmt(v)} > search.constraints.{n} {_fmt(limits[n])}"
            for n, v in values.items()
            if v > limits[n]
        ]
        if over:
            dropped[label] = over
            logger.info(f"dropped student {label}: {'; '.join(over)} (on {cost.device})")
        else:
            logger.info(f"student {label}: {shown} (on {cost.device}) meets search.constraints")
    kept = [i for i, pair in enumerate(spec.pairs) if pair.student.label not in dropped]
    if not kept:
        raise SpecError(
            [
                f"search.constraints: no student meets {_fmt_limits(limits)} "
                f"({'; '.join(f'{label}: {over[0]}' for label, over in dropped.items())}); "
                "relax the limits or add smaller students"
            ]
        )
    if len(kept) < len(spec.pairs):
        spec = spec.model_copy(update={"pairs": [spec.pairs[i] for i in kept]})
    return spec, [stages[i] for i in kept]


def _fmt(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:.3g}"


def _fmt_limits(limits: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in limits.items()) + "}"


def forward_problem(net: nn.Module, name: str, input_size: tuple[int, int, int]) -> str | None:
    """Why ``net`` cannot run on the data's images, or None: one forward pass on a batch of two
    at the spec's size, without gradients, as every trial will run it.
    Catches what building alone does not, e.g. ConvNeXt's 4x4 stem and 7x7 kernels at 28 px
    ("Kernel size can't be greater than actual input size")."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(2, *input_size)
            net(x)
    except Exception as exc:  # any failure here would fail every trial of this model
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        c, h, w = input_size
        return (
            f"{name} does not run at the data's image size, {h}x{w} px with {c} channel(s): {text}; "
            f"set data.image_size larger or choose another model (`ofasearch models --image-size {h}` "
            "lists the usable ones)"
        )
    finally:
        net.train(was_training)
    return None


def check_grace(spec: Spec) -> None:
    """A new search's ASHA grace period must not end inside the warm-up (its rung would compare
    trials that all still score about the same, and stop them at random). Checked when a search
    starts or is validated, not when an older results folder is read or resumed."""
    grace, first = spec.search.grace_epochs, spec.first_rung_after_warmup()
    if grace is not None and grace < first:
        raise SpecError(
            [
                f"search.grace_epochs: {grace} ends inside the warm-up (optim.warmup_epochs: "
                f"{_shown(spec.optim.warmup_epochs)}), where every trial scores about the same and ASHA "
                f"would stop them at random; must be >= {first} (leave it out: the default is {first})"
            ]
        )


def _shown(value: Any) -> Any:
    return value.model_dump() if hasattr(value, "model_dump") else value
