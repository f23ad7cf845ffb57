"""OFADistiller: a student, a frozen teacher and the student's exit branches in one module.

Its loss is a composition of terms, each a registered loss object (:mod:`.criteria`): the
ground-truth cross-entropy, a loss on the final logits, and a loss per exit branch. The paper's
OFA-KD uses the OFA loss for both; the baselines (KD, DKD, DIST) are a logit loss without branches.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import random_seed
from torch import nn

from ofasearch.config import DistillSpec, TrainConfig
from ofasearch.config.registry import METHODS, get_method
from ofasearch.distill.branches import ConvBranch, TokenBranch
from ofasearch.distill.criteria import (
    LOSSES,
    DistillLoss,
    Standardized,
    build_loss,
)
from ofasearch.errors import SpecError
from ofasearch.models import ModelInfo, build_model, describe_model, normalization

__all__ = ["OFADistiller", "gt_loss_for"]

LossChoice = DistillLoss | str | None
"""A term's loss: an object, a registered name (its parameters at their defaults, OFA's eps and
the temperature from the distiller's own arguments), or None for the method's own."""


def gt_loss_for(config: TrainConfig) -> nn.Module | None:
    """timm's ground-truth criterion for the config's augmentation; None: plain cross-entropy."""
    a = config.augment
    if a.mixes and config.data.augment:
        return SoftTargetCrossEntropy()
    if float(a.label_smoothing) > 0:
        return LabelSmoothingCrossEntropy(float(a.label_smoothing))
    return None


class OFADistiller(nn.Module):
    """Distil ``teacher`` into ``student`` (any timm models) with OFA-KD, a composition of loss
    terms, or a baseline.

    ``method="ofa"``: ``gt_weight * CE + kd_weight * logit_loss(final logits) + ofa_weight * sum
    over stages of branch_loss(branch logits)``; by default both losses are OFA's, with
    ``eps[-1]`` on the final logits and ``eps[k]`` on stage k's branch (the paper's OFA-KD).
    ``logit_loss`` / ``branch_loss``: a loss object of :mod:`ofasearch.distill.criteria` or its
    registered name; ``logit_standardize`` / ``branch_standardize`` put logit standardization in
    front. ``"kd"``, ``"dkd"``, ``"dist"``: that method's loss on the final logits (``logit_loss``
    gives its settings), no branches; ``"none"``: the student alone. The teacher may also be None
    when its logits always come from a cache (``forward(..., teacher_logits=...)``);
    ``teacher_features`` then sizes the branches.
    ``stages=None`` uses every stage the student has; ``()`` none. ``eps`` is one value or one per
    stage plus one for the final logits. Images are expected in [0, 1]; each model gets its own
    timm normalisation unless ``normalize=False``. The teacher stays in eval mode without
    gradients whatever ``train()`` is called with.
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
        logit_loss: LossChoice = None,
        branch_loss: LossChoice = None,
        logit_standardize: bool = False,
        branch_standardize: bool = False,
        mean_std: tuple[Sequence[float], Sequence[float]] | None = None,
        gt_loss: nn.Module | None = None,
    ):
        super().__init__()
        if method not in METHODS:
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
        self.epoch: int | None = None  # 0-based; set by the training loop (set_epoch)
        info = describe_model(student, input_size) if needs.branches else None
        if info is not None and stages is None:
            stages = sorted(info.stage_shapes)
        self.stages = tuple(sorted(stages or ())) if info is not None else ()
        self.eps = self._per_stage_eps(eps)
        self.logit_loss = self._term_loss(logit_loss, self.eps[-1], logit_standardize) if needs.teacher else None
        self.branch_losses = {
            stage: self._term_loss(branch_loss or "ofa", e, branch_standardize, field="branch_loss")
            for stage, e in zip(self.stages, self.eps[:-1], strict=True)
        }
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

    def _term_loss(
        self,
        choice: LossChoice,
        eps: float,
        standardized: bool,
        settings: DistillSpec | None = None,
        epochs: int = 240,
        field: str = "logit_loss",
    ) -> DistillLoss:
        """One term's loss object: given, or named (None: the method's own, OFA for the frame),
        built by :func:`build_loss` from ``settings`` (default: the schema's defaults at this
        distiller's temperature) with this term's eps."""
        if choice is None:
            choice = "ofa" if self.method == "ofa" else self.method
        if isinstance(choice, str):
            if choice not in LOSSES:
                raise SpecError([f"distill.{field}: {choice!r} is not allowed (allowed: {', '.join(LOSSES)})"])
            settings = settings or DistillSpec(temperature=self.temperature)
            return build_loss(choice, settings, eps=eps, standardized=standardized, epochs=epochs)
        return Standardized(choice) if standardized and not isinstance(choice, Standardized) else choice

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
        distiller = cls(
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
            mean_std=mean_std,
            gt_loss=gt_loss_for(config),
        )
        distiller.compose(config)
        return distiller

    def compose(self, config: TrainConfig) -> None:
        """The terms' loss objects as ``config.distill`` says, each with its own settings."""
        d, epochs = config.distill, config.optim.epochs
        if self.logit_loss is not None:
            self.logit_loss = self._term_loss(d.logit_loss_name, self.eps[-1], d.logit_standardize, d, epochs)
        self.branch_losses = {
            stage: self._term_loss(d.branch_loss, e, d.branch_standardize, d, epochs, field="branch_loss")
            for stage, e in zip(self.stages, self.eps[:-1], strict=True)
        }

    # ----------------------------------------------------------------------------- building
    def _per_stage_eps(self, eps: float | Sequence[float]) -> tuple[float, ...]:
        n = len(self.stages) + 1
        values = [float(eps)] * n if isinstance(eps, (int, float)) else [float(e) for e in eps]
        if not self.stages:  # no branches: only the final logits' value is used
            values = values[-1:]
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
        schedule over epochs (DKD's warm-up, :meth:`DistillLoss.weight_at`) read it."""
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
        if self.logit_loss is not None:
            t = teacher_logits if teacher_logits is not None else self.teacher_logits(images)
            value = self.logit_loss(logits, t, labels)
            total = total + self.kd_weight * self.logit_loss.weight_at(self.epoch) * value
            parts["kd"] = value.detach()
            if exits:
                branch = sum(self.branch_losses[s](exits[s], t, labels) for s in self.stages)
                assert isinstance(branch, torch.Tensor)
                total = total + self.ofa_weight * branch
                parts["ofa"] = branch.detach()
        parts["logits"] = logits.detach()
        return total, parts
