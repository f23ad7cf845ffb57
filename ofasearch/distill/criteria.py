"""The distillation losses as objects, one registered class per method (as timm and torchdistill
register theirs), each with its own typed parameters.

A composition's term holds one of them: the loss on the final logits (``distill.logit_loss``)
and the loss of each exit branch (``distill.branch_loss``). Every object is called as
``loss(student_logits, teacher_logits, labels)``; :class:`Standardized` puts logit
standardization in front of any of them. The names are those of
``ofasearch.config.registry.LOSSES`` (a test checks they agree), so the schema validates names
without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ofasearch.config import DistillSpec
from ofasearch.config.registry import LOSSES as LOSS_INFO
from ofasearch.distill.loss import dist_loss, dkd_loss, kd_loss, ofa_loss, standardize

__all__ = [
    "DISTLoss",
    "DKDLoss",
    "DKD_WARMUP_SHARE",
    "DistillLoss",
    "KDLoss",
    "LOSSES",
    "OFALoss",
    "Standardized",
    "build_loss",
    "dkd_warmup_epochs",
]

# DKD ramps its loss up linearly over its first 20 of 240 epochs (Zhao et al., CVPR 2022, CIFAR-100)
DKD_WARMUP_SHARE = 20 / 240


class DistillLoss:
    """A loss between the student's and the teacher's logits. ``weight_at(epoch)`` is the factor
    a schedule puts on it (1 unless the method ramps itself up, like DKD)."""

    name: ClassVar[str]
    positive: ClassVar[tuple[str, ...]] = ()  # the parameters that must be > 0, checked at creation

    def __post_init__(self) -> None:
        _check_positive(self, *self.positive)

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weight_at(self, epoch: int | None) -> float:
        """The loss's own factor in 0-based ``epoch`` (None: no loop counts epochs: full weight)."""
        return 1.0


@dataclass(frozen=True)
class OFALoss(DistillLoss):
    """OFA-KD's target-enhanced cross-entropy against the teacher (:func:`ofa_loss`)."""

    eps: float = 1.0
    temperature: float = 1.0
    name: ClassVar[str] = "ofa"
    positive: ClassVar[tuple[str, ...]] = ("eps", "temperature")

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return ofa_loss(student, teacher, labels, self.eps, self.temperature)


@dataclass(frozen=True)
class KDLoss(DistillLoss):
    """Hinton KD, ``T^2 * KL(p_t || p_s)`` (:func:`kd_loss`)."""

    temperature: float = 1.0
    name: ClassVar[str] = "kd"
    positive: ClassVar[tuple[str, ...]] = ("temperature",)

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return kd_loss(student, teacher, self.temperature)


@dataclass(frozen=True)
class DKDLoss(DistillLoss):
    """Decoupled KD, ``alpha * TCKD + beta * NCKD`` (:func:`dkd_loss`), ramped up linearly over its
    first ``warmup_epochs`` epochs as its authors train it."""

    alpha: float = 1.0
    beta: float = 8.0
    temperature: float = 4.0
    warmup_epochs: int = 20
    name: ClassVar[str] = "dkd"
    positive: ClassVar[tuple[str, ...]] = ("temperature",)

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return dkd_loss(student, teacher, labels, self.alpha, self.beta, self.temperature)

    def weight_at(self, epoch: int | None) -> float:
        if epoch is None or self.warmup_epochs <= 0:
            return 1.0
        return min((epoch + 1) / self.warmup_epochs, 1.0)


@dataclass(frozen=True)
class DISTLoss(DistillLoss):
    """DIST's inter- and intra-class relation loss (:func:`dist_loss`)."""

    beta: float = 1.0
    gamma: float = 1.0
    temperature: float = 1.0
    name: ClassVar[str] = "dist"
    positive: ClassVar[tuple[str, ...]] = ("temperature",)

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return dist_loss(student, teacher, self.beta, self.gamma, self.temperature)


@dataclass(frozen=True)
class Standardized(DistillLoss):
    """``inner`` on z-scored logits of both models (:func:`standardize`): logit standardization
    in front of any loss, whose temperature becomes the base temperature."""

    inner: DistillLoss
    name: ClassVar[str] = "standardized"

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.inner(standardize(student), standardize(teacher), labels)

    def weight_at(self, epoch: int | None) -> float:
        return self.inner.weight_at(epoch)


LOSSES: dict[str, type[DistillLoss]] = {cls.name: cls for cls in (OFALoss, KDLoss, DKDLoss, DISTLoss)}


def dkd_warmup_epochs(given: int | None, epochs: int) -> int:
    """DKD's warm-up length: ``given``, or the paper's share of the budget (at least one epoch)."""
    return given if given is not None else max(1, math.ceil(epochs * DKD_WARMUP_SHARE))


def build_loss(
    name: str, distill: DistillSpec, *, eps: float = 1.0, standardized: bool = False, epochs: int = 240
) -> DistillLoss:
    """The ``name`` loss with its parameters read from ``distill`` (where each lives is in
    ``config.registry.LOSSES``); ``eps``: the OFA exponent of this term (one per stage is
    allowed); ``epochs``: the budget DKD's default warm-up is a share of."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r} (allowed: {', '.join(LOSSES)})")
    kwargs: dict[str, Any] = {own: getattr(distill, field) for own, field in LOSS_INFO[name].params.items()}
    if name == "ofa":
        kwargs["eps"] = eps
    if name == "dkd":
        kwargs["warmup_epochs"] = dkd_warmup_epochs(distill.dkd_warmup_epochs, epochs)
    loss = LOSSES[name](**kwargs)
    return Standardized(loss) if standardized else loss


def _check_positive(loss: DistillLoss, *fields: str) -> None:
    for field in fields:
        value = getattr(loss, field)
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise ValueError(f"{type(loss).__name__}.{field}: {value!r} is not allowed; must be > 0")
