"""OFADistiller: a student, a frozen teacher and the student's exit branches in one module.

The methods are named in ``ofasearch.config.registry.METHODS`` (whether each needs a teacher and
exit branches); :data:`METHOD_LOSSES` holds each one's distillation terms under the same names,
so a new baseline is one registry entry plus one function here.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import random_seed
from torch import nn

from ofasearch.config import TrainConfig
from ofasearch.config.registry import METHODS, get_method
from ofasearch.distill.branches import ConvBranch, TokenBranch
from ofasearch.distill.loss import dist_loss, dkd_loss, kd_loss, ofa_loss
from ofasearch.errors import SpecError
from ofasearch.models import ModelInfo, build_model, describe_model, normalization

__all__ = ["DKD_WARMUP_SHARE", "METHOD_LOSSES", "MethodLoss", "OFADistiller", "dkd_warmup_epochs", "gt_loss_for"]

# DKD ramps its loss up linearly over its first 20 of 240 epochs (Zhao et al., CVPR 2022, CIFAR-100)
DKD_WARMUP_SHARE = 20 / 240

MethodLoss = Callable[
    ["OFADistiller", torch.Tensor, dict[int, torch.Tensor], torch.Tensor, torch.Tensor],
    dict[str, tuple[float, torch.Tensor]],
]
"""(distiller, student logits, exit-branch logits per stage, teacher logits, labels) -> the
method's loss terms by name, each as (weight, unweighted value); the ground-truth CE is added
by the distiller for every method."""


def _ofa_terms(
    d: OFADistiller, logits: torch.Tensor, exits: dict[int, torch.Tensor], teacher: torch.Tensor, labels: torch.Tensor
) -> dict[str, tuple[float, torch.Tensor]]:
    """OFA-KD (Hao et al., NeurIPS 2023): OFA loss on the final logits with ``eps[-1]`` plus, per
    distilled stage, the OFA loss of that stage's exit branch with its own eps."""
    terms = {"kd": (d.kd_weight, ofa_loss(logits, teacher, labels, d.eps[-1], d.temperature))}
    if exits:
        ofa = sum(
            ofa_loss(exits[s], teacher, labels, e, d.temperature) for s, e in zip(d.stages, d.eps[:-1], strict=True)
        )
        assert isinstance(ofa, torch.Tensor)
        terms["ofa"] = (d.ofa_weight, ofa)
    return terms


def _vanilla_kd_terms(
    d: OFADistiller, logits: torch.Tensor, _exits: dict[int, torch.Tensor], teacher: torch.Tensor, _labels: torch.Tensor
) -> dict[str, tuple[float, torch.Tensor]]:
    """Hinton et al. (2015): KL divergence to the teacher's softened logits."""
    return {"kd": (d.kd_weight, kd_loss(logits, teacher, d.temperature))}


def _dkd_terms(
    d: OFADistiller, logits: torch.Tensor, _exits: dict[int, torch.Tensor], teacher: torch.Tensor, labels: torch.Tensor
) -> dict[str, tuple[float, torch.Tensor]]:
    """Zhao et al. (CVPR 2022): alpha * TCKD + beta * NCKD, ramped up linearly over the first
    ``dkd_warmup_epochs`` epochs (``set_epoch``; full weight when no loop calls it)."""
    ramp = 1.0 if d.epoch is None or d.dkd_warmup_epochs <= 0 else min((d.epoch + 1) / d.dkd_warmup_epochs, 1.0)
    value = dkd_loss(logits, teacher, labels, d.dkd_alpha, d.dkd_beta, d.dkd_temperature)
    return {"kd": (d.kd_weight * ramp, value)}


def _dist_terms(
    d: OFADistiller, logits: torch.Tensor, _exits: dict[int, torch.Tensor], teacher: torch.Tensor, _labels: torch.Tensor
) -> dict[str, tuple[float, torch.Tensor]]:
    """Huang et al. (NeurIPS 2022): inter- and intra-class Pearson relations to the teacher."""
    return {"kd": (d.kd_weight, dist_loss(logits, teacher, d.dist_beta, d.dist_gamma, d.dist_temperature))}


def _no_terms(
    _d: OFADistiller, _logits: torch.Tensor, _exits: dict[int, torch.Tensor], _t: torch.Tensor, _labels: torch.Tensor
) -> dict[str, tuple[float, torch.Tensor]]:
    """The student alone: ground-truth cross-entropy only."""
    return {}


METHOD_LOSSES: dict[str, MethodLoss] = {
    "ofa": _ofa_terms,
    "kd": _vanilla_kd_terms,
    "dkd": _dkd_terms,
    "dist": _dist_terms,
    "none": _no_terms,
}


def dkd_warmup_epochs(given: int | None, epochs: int) -> int:
    """DKD's warm-up length: ``given``, or the paper's share of the budget (at least one epoch)."""
    return given if given is not None else max(1, math.ceil(epochs * DKD_WARMUP_SHARE))


def gt_loss_for(config: TrainConfig) -> nn.Module | None:
    """timm's ground-truth criterion for the config's augmentation; None: plain cross-entropy."""
    a = config.augment
    if a.mixes and config.data.augment:
        return SoftTargetCrossEntropy()
    if float(a.label_smoothing) > 0:
        return LabelSmoothingCrossEntropy(float(a.label_smoothing))
    return None


class OFADistiller(nn.Module):
    """Distil ``teacher`` into ``student`` (any timm models) with OFA-KD, or a baseline.

    ``method="ofa"``: gt CE + kd_weight * OFA(final logits, eps_last) + ofa_weight * sum over the
    ``stages`` of OFA(branch logits, eps_k); ``"kd"``: gt CE + kd_weight * Hinton KD (T^2);
    ``"dkd"``: gt CE + kd_weight * DKD (``dkd_alpha``, ``dkd_beta``, ``dkd_temperature``, warm-up
    over ``dkd_warmup_epochs`` counted by :meth:`set_epoch`); ``"dist"``: gt CE + kd_weight * DIST
    (``dist_beta``, ``dist_gamma``, ``dist_temperature``); ``"none"``: the student alone. The teacher may also be None
    when its logits always come from a cache (``forward(..., teacher_logits=...)``);
    ``teacher_features`` then sizes the branches.
    ``stages=None`` uses every stage the student has. ``eps`` is one value or one per stage plus
    one for the final logits. Images are expected in [0, 1]; each model gets its own timm
    normalisation unless ``normalize=False``. The teacher stays in eval mode without gradients
    whatever ``train()`` is called with.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        num_classes: int,
        stages: Sequence[int] | None = (1, 2, 3, 4),
        eps: float | Sequence[float] = 1.0,
        temperature: float = 1.0,
        gt_weight: float = 1.0,
        kd_weight: float = 1.0,
        ofa_weight: float = 1.0,
        input_size: tuple[int, int, int] = (3, 224, 224),
        method: str = "ofa",
        normalize: bool = True,
        teacher_features: int | None = None,
        dkd_alpha: float = 1.0,
        dkd_beta: float = 8.0,
        dkd_temperature: float = 4.0,
        dkd_warmup_epochs: int = 20,
        dist_beta: float = 1.0,
        dist_gamma: float = 1.0,
        dist_temperature: float = 1.0,
        mean_std: tuple[Sequence[float], Sequence[float]] | None = None,
        gt_loss: nn.Module | None = None,
    ):
        super().__init__()
        if method not in METHODS or method not in METHOD_LOSSES:
            raise SpecError([f"distill.method: {method!r} is not allowed (allowed: {', '.join(METHODS)})"])
        needs = get_method(method)
        if teacher is None and needs.teacher and teacher_features is None:
            raise SpecError([f"distill.method: {method!r} needs a teacher (or teacher_features with cached logits)"])
        if temperature <= 0:
            raise SpecError([f"distill.temperature: {temperature!r} is not allowed; must be > 0"])
        self.student = student
        self.teacher = teacher
        self._teacher_features = teacher_features
        self.method = method
        self.num_classes = num_classes
        self.temperature = float(temperature)
        self.gt_weight, self.kd_weight, self.ofa_weight = float(gt_weight), float(kd_weight), float(ofa_weight)
        self.dkd_alpha, self.dkd_beta, self.dkd_warmup_epochs = (
            float(dkd_alpha),
            float(dkd_beta),
            int(dkd_warmup_epochs),
        )
        self.dist_beta, self.dist_gamma = float(dist_beta), float(dist_gamma)
        self.dkd_temperature, self.dist_temperature = float(dkd_temperature), float(dist_temperature)
        self.epoch: int | None = None  # 0-based; set by the training loop (set_epoch)
        info = describe_model(student, input_size) if needs.branches else None
        if info is not None and stages is None:
            stages = sorted(info.stage_shapes)
        self.stages = tuple(sorted(stages or ())) if info is not None else ()
        self.eps = self._per_stage_eps(eps)
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
        in_chans = input_size[0]
        self._register_norm("student", student, in_chans, normalize, mean_std)
        self._register_norm("teacher", teacher, in_chans, normalize, mean_std)
        # the ground-truth term: plain cross-entropy unless a recipe asks for timm's
        # LabelSmoothingCrossEntropy / SoftTargetCrossEntropy (soft labels under mixup)
        self.gt_loss = gt_loss
        self.branches = nn.ModuleDict()
        self._indices: list[int] = []
        self._prefix_kw: dict[str, bool] = {}
        self._head_map_stage: int | None = None
        if info is not None:
            self._build_branches(info)

    @classmethod
    def from_config(
        cls,
        config: TrainConfig,
        teacher: nn.Module | None,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        teacher_features: int | None = None,
        mean_std: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> OFADistiller:
        """The distiller a train config describes, for data of this shape (``Splits.model_args``).

        The student is created from ``config.pair.student`` right after seeding every RNG with
        ``config.seed``, so student and branches start the same whether or not a teacher was built
        (or trained) first. ``teacher`` is dropped when the method needs none; with cached teacher
        logits pass ``teacher=None`` and the teacher's ``teacher_features`` (branch width).
        ``mean_std``: one normalisation for both models (``augment.normalize: dataset``). The
        ground-truth loss follows ``config.augment``: timm's ``SoftTargetCrossEntropy`` when
        images are mixed (mixup already smooths the soft labels), ``LabelSmoothingCrossEntropy``
        with ``label_smoothing`` alone.
        """
        d = config.distill
        random_seed(config.seed)
        student = build_model(
            config.pair.student.model,
            config.pair.student.kwargs,
            num_classes=num_classes,
            in_chans=in_chans,
            image_size=image_size,
        )
        return cls(
            student,
            teacher if get_method(d.method).teacher else None,
            num_classes,
            stages=d.stages,
            eps=d.eps,
            temperature=d.temperature,
            gt_weight=d.gt_weight,
            kd_weight=d.kd_weight,
            ofa_weight=d.ofa_weight,
            input_size=(in_chans, image_size, image_size),
            method=d.method,
            teacher_features=teacher_features,
            dkd_alpha=d.dkd_alpha,
            dkd_beta=d.dkd_beta,
            dkd_temperature=d.dkd_temperature,
            dkd_warmup_epochs=dkd_warmup_epochs(d.dkd_warmup_epochs, config.optim.epochs),
            dist_beta=d.dist_beta,
            dist_gamma=d.dist_gamma,
            dist_temperature=d.dist_temperature,
            mean_std=mean_std,
            gt_loss=gt_loss_for(config),
        )

    # ----------------------------------------------------------------------------- building
    def _per_stage_eps(self, eps: float | Sequence[float]) -> tuple[float, ...]:
        n = len(self.stages) + 1
        values = [float(eps)] * n if isinstance(eps, (int, float)) else [float(e) for e in eps]
        if len(values) != n:
            raise SpecError(
                [
                    f"distill.eps: {list(eps)} has {len(values)} values; give one, or {n} "  # type: ignore[arg-type]
                    f"(one per stage {list(self.stages)} plus one for the final logits)"
                ]
            )
        if any(e <= 0 for e in values):
            raise SpecError([f"distill.eps: {values} is not allowed; every eps must be > 0"])
        return tuple(values)

    def _register_norm(
        self,
        name: str,
        model: nn.Module | None,
        in_chans: int,
        normalize: bool,
        mean_std: tuple[Sequence[float], Sequence[float]] | None,
    ) -> None:
        if mean_std is not None and normalize:  # one normalisation for both models (e.g. the dataset's)
            mean, std = tuple(mean_std[0]), tuple(mean_std[1])
        elif model is None or not normalize:
            mean, std = (0.0,) * in_chans, (1.0,) * in_chans
        else:
            mean, std = normalization(model, in_chans)
        self.register_buffer(f"{name}_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer(f"{name}_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def _build_branches(self, info: ModelInfo) -> None:
        missing = [s for s in self.stages if s not in info.stage_shapes]
        if missing:
            raise SpecError(
                [
                    f"distill.stages: stage(s) {missing} do not exist in student {type(self.student).__name__}, "
                    f"which has stages {sorted(info.stage_shapes)}"
                ]
            )
        teacher_dim = int(getattr(self.teacher, "num_features", 0) or self._teacher_features or 0)
        width = max(info.num_features, teacher_dim)
        last = info.stage_shapes[max(info.stage_shapes)]
        for stage in self.stages:
            shape = info.stage_shapes[stage]
            if info.tokens:
                branch: nn.Module = TokenBranch(
                    shape, last, stage, info.num_features, self.num_classes, info.prefix_tokens, info.class_token
                )
            else:
                branch = ConvBranch(shape, last, stage, width, self.num_classes)
            self.branches[str(stage)] = branch
        self._indices = [info.stage_index[s] for s in self.stages]
        self._head_map_stage = info.head_map_stage
        params = inspect.signature(self.student.forward_intermediates).parameters
        if info.prefix_tokens and "return_prefix_tokens" in params:
            self._prefix_kw = {"return_prefix_tokens": True}

    # ----------------------------------------------------------------------------- running
    def set_epoch(self, epoch: int) -> None:
        """The 0-based epoch about to be trained (like a DistributedSampler's): losses with a
        schedule over epochs (DKD's warm-up) read it."""
        self.epoch = int(epoch)

    def train(self, mode: bool = True) -> OFADistiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's logits for images in [0, 1]."""
        if self.teacher is None:
            raise RuntimeError("this distiller has no teacher: pass teacher_logits (cached logits) to forward()")
        return self.teacher((images - self.teacher_mean) / self.teacher_std)

    def student_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Student logits and, for OFA, the branch logits per stage, from one student pass."""
        x = (images - self.student_mean) / self.student_std
        if not self.stages:
            return self.student(x), {}
        final, feats = self.student.forward_intermediates(
            x, indices=self._indices, intermediates_only=False, **self._prefix_kw
        )
        logits = self.student.forward_head(final)
        exits = {}
        for stage, feat in zip(self.stages, feats, strict=True):
            spatial, prefix = feat if isinstance(feat, tuple) else (feat, None)
            if stage == self._head_map_stage:  # after the conv head, what the classifier pools
                spatial = final
            exits[stage] = self.branches[str(stage)](spatial, prefix)
        return logits, exits

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its named parts (detached). ``teacher_logits`` skips the teacher
        (e.g. read from a logit cache)."""
        logits, exits = self.student_forward(images)
        if self.gt_loss is not None:
            gt = self.gt_loss(logits.float(), labels)
        else:
            gt = F.cross_entropy(logits.float(), labels.float() if labels.ndim == 2 else labels)
        total = self.gt_weight * gt
        parts = {"gt": gt.detach()}
        if get_method(self.method).teacher:
            t = teacher_logits if teacher_logits is not None else self.teacher_logits(images)
            for name, (weight, value) in METHOD_LOSSES[self.method](self, logits, exits, t, labels).items():
                total = total + weight * value
                parts[name] = value.detach()
        parts["logits"] = logits.detach()
        return total, parts
