"""OFADistiller: a student, a frozen teacher and the student's exit branches in one module."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ofasearch.distill.branches import ConvBranch, TokenBranch
from ofasearch.distill.loss import kd_loss, ofa_loss
from ofasearch.errors import SpecError
from ofasearch.models import ModelInfo, describe_model, normalization

__all__ = ["METHODS", "OFADistiller"]

METHODS = ("ofa", "kd", "none")


class OFADistiller(nn.Module):
    """Distil ``teacher`` into ``student`` (any timm models) with OFA-KD, or a baseline.

    ``method="ofa"``: gt CE + kd_weight * OFA(final logits, eps_last) + ofa_weight * sum over the
    ``stages`` of OFA(branch logits, eps_k); ``"kd"``: gt CE + kd_weight * Hinton KD (T^2);
    ``"none"``: the student alone. The teacher may also be None when its logits always come from
    a cache (``forward(..., teacher_logits=...)``); ``teacher_features`` then sizes the branches.
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
    ):
        super().__init__()
        if method not in METHODS:
            raise SpecError([f"distill.method: {method!r} is not allowed (allowed: {', '.join(METHODS)})"])
        if teacher is None and method != "none" and teacher_features is None:
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
        info = describe_model(student, input_size) if method == "ofa" else None
        if info is not None and stages is None:
            stages = sorted(info.stage_shapes)
        self.stages = tuple(sorted(stages or ())) if info is not None else ()
        self.eps = self._per_stage_eps(eps)
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
        in_chans = input_size[0]
        self._register_norm("student", student, in_chans, normalize)
        self._register_norm("teacher", teacher, in_chans, normalize)
        self.branches = nn.ModuleDict()
        self._indices: list[int] = []
        self._prefix_kw: dict[str, bool] = {}
        if info is not None:
            self._build_branches(info)

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

    def _register_norm(self, name: str, model: nn.Module | None, in_chans: int, normalize: bool) -> None:
        if model is None or not normalize:
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
                branch: nn.Module = TokenBranch(shape, last, stage, self.num_classes, info.prefix_tokens)
            else:
                branch = ConvBranch(shape, last, stage, width, self.num_classes)
            self.branches[str(stage)] = branch
        self._indices = [info.stage_index[s] for s in self.stages]
        params = inspect.signature(self.student.forward_intermediates).parameters
        if info.prefix_tokens and "return_prefix_tokens" in params:
            self._prefix_kw = {"return_prefix_tokens": True}

    # ----------------------------------------------------------------------------- running
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
        gt = F.cross_entropy(logits.float(), labels.float() if labels.ndim == 2 else labels)
        total = self.gt_weight * gt
        parts = {"gt": gt.detach()}
        if self.method != "none":
            t = teacher_logits if teacher_logits is not None else self.teacher_logits(images)
            if self.method == "kd":
                kd = kd_loss(logits, t, self.temperature)
            else:
                kd = ofa_loss(logits, t, labels, self.eps[-1], self.temperature)
            total = total + self.kd_weight * kd
            parts["kd"] = kd.detach()
            if exits:
                ofa = sum(
                    ofa_loss(exits[s], t, labels, e, self.temperature)
                    for s, e in zip(self.stages, self.eps[:-1], strict=True)
                )
                assert isinstance(ofa, torch.Tensor)
                total = total + self.ofa_weight * ofa
                parts["ofa"] = ofa.detach()
        parts["logits"] = logits.detach()
        return total, parts
