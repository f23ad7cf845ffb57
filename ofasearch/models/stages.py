"""Stages of a timm model: the paper's stages 1..4 mapped onto its own features, measured shapes, family."""

from __future__ import annotations

import math
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ofasearch.errors import SpecError

__all__ = ["ModelInfo", "StageShape", "describe_model", "is_token_model", "stage_indices"]


def _feature_reductions(model: nn.Module) -> list[int]:
    info = getattr(model, "feature_info", None)
    if info is None or not hasattr(model, "forward_intermediates"):
        raise SpecError(
            [
                f"model {type(model).__name__} has no forward_intermediates()/feature_info in "
                f"timm {timm.__version__}; ofasearch needs both for exit branches"
            ]
        )
    if hasattr(info, "reduction"):
        return list(info.reduction())
    return [int(f.get("reduction", 1)) for f in info]


def stage_indices(model: nn.Module) -> dict[int, int]:
    """Map the paper's stages 1..4 onto indices of the model's ``forward_intermediates``.

    Hierarchical models (feature reductions grow): their last four features are stages 1..4;
    with fewer than four, the missing early stages are absent. Plain models with N equal-
    resolution blocks: stage k is block ``ceil(N * f_k) - 1`` with f = (1/6, 1/3, 5/6, 1), kept
    strictly increasing, which gives blocks 1, 3, 9, 11 for N = 12 (the reference DeiT setting),
    0, 1, 4, 5 for N = 6 and 0, 1, 2, 3 for N = 4.
    """
    reductions = _feature_reductions(model)
    n = len(reductions)
    if len(set(reductions)) > 1:
        return {stage: n - 5 + stage for stage in range(1, 5) if n - 5 + stage >= 0}
    raw = [math.ceil(n * f - 1e-9) - 1 for f in (1 / 6, 1 / 3, 5 / 6, 1.0)]
    idx = list(raw)
    for k in range(2, -1, -1):  # keep below the next stage
        idx[k] = min(idx[k], idx[k + 1] - 1)
    for k in range(1, 4):  # and above the previous one
        idx[k] = max(idx[k], idx[k - 1] + 1)
    return {stage: i for stage, i in zip(range(1, 5), idx, strict=True) if 0 <= i < n}


@dataclass(frozen=True)
class StageShape:
    """Measured shape of one stage's feature map, channels first: (C, H, W)."""

    channels: int
    height: int
    width: int


@dataclass(frozen=True)
class ModelInfo:
    """What the distiller needs to know about a model, measured with one dummy forward."""

    tokens: bool  # True: ViT/Swin/Mixer-like (token branches); False: CNN-map branches
    prefix_tokens: int
    num_features: int  # the final width: what the classifier sees
    stage_index: dict[int, int]  # paper stage -> forward_intermediates index
    stage_shapes: dict[int, StageShape]
    attention: bool
    class_token: bool = False  # token 0 is a class token (read out by token branches)
    head_map_stage: int | None = None  # this stage reads the final map (after a conv head), not its intermediate

    @property
    def family(self) -> str:
        """``vit`` when it computes attention, else ``mlp`` for a token model, else ``cnn``."""
        if self.attention:
            return "vit"
        return "mlp" if self.tokens else "cnn"


def is_token_model(features: torch.Tensor, num_features: int) -> bool:
    """Token models keep channels last: ``forward_features`` gives (B, L, D) or (B, H, W, D)."""
    if features.ndim == 3:
        return True
    return features.ndim == 4 and features.shape[-1] == num_features and features.shape[1] != num_features


# what attention computes, in any of its spellings (timm's fused path, torch's own module, a
# softmax of a score matrix); a class name says nothing (CaiT's ClassAttn, CoaT's FactorAttn...)
_ATTENTION_OPS = frozenset({F.scaled_dot_product_attention, F.multi_head_attention_forward})
_SOFTMAX_OPS = frozenset({F.softmax, torch.softmax, torch.Tensor.softmax})


class _AttentionSeen(TorchFunctionMode):
    """Watches one forward for attention: tokens weighed by a softmax of their pairwise scores
    (a matrix, not a vector: a global-context block's softmax over positions is not attention).
    A model that computes it is a transformer (``vit``, also with NCHW features, e.g. PVT); a
    token model that only mixes tokens with learned weights (MLP-Mixer, ResMLP, gMLP) is an
    ``mlp``."""

    attention = False

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func in _ATTENTION_OPS:
            self.attention = True
        elif func in _SOFTMAX_OPS and args and isinstance(args[0], torch.Tensor):
            scores = args[0]
            self.attention |= scores.ndim >= 3 and scores.shape[-1] > 1 and scores.shape[-2] > 1
        return func(*args, **(kwargs or {}))


def describe_model(model: nn.Module, input_size: tuple[int, int, int]) -> ModelInfo:
    """Measure stage shapes and the model family with one forward pass on a zero batch.

    A CNN's last stage is the map its classifier pools, as in the reference implementation: for
    EfficientNet/MobileNetV2 that is after ``conv_head``+``bn2`` (1280 channels for
    mobilenetv2_100), not the last block's output (320), so ``head_map_stage`` names it.
    """
    index = stage_indices(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _AttentionSeen() as seen:
            x = torch.zeros(1, *input_size)
            features = model.forward_features(x)
            final, inter = model.forward_intermediates(x, indices=sorted(index.values()), intermediates_only=False)
    finally:
        model.train(was_training)
    by_index = dict(zip(sorted(index.values()), inter, strict=True))
    shapes = {}
    for stage, i in index.items():
        t = by_index[i]
        if isinstance(t, tuple):
            t = t[0]
        if t.ndim != 4:
            raise SpecError([f"model {type(model).__name__}: stage {stage} feature has shape {tuple(t.shape)}"])
        shapes[stage] = StageShape(int(t.shape[1]), int(t.shape[2]), int(t.shape[3]))
    num_features = int(getattr(model, "num_features", shapes[max(shapes)].channels))
    attention = seen.attention
    tokens = is_token_model(features, num_features)
    head_map_stage = None
    last = max(shapes)
    if not tokens and last == 4 and final.ndim == 4 and final.shape[1] == num_features:
        head_map = StageShape(int(final.shape[1]), int(final.shape[2]), int(final.shape[3]))
        if head_map != shapes[last]:  # a conv head between the last block and the pooling
            shapes[last], head_map_stage = head_map, last
    return ModelInfo(
        tokens=tokens,
        prefix_tokens=int(getattr(model, "num_prefix_tokens", 0) or 0),
        num_features=num_features,
        stage_index=index,
        stage_shapes=shapes,
        attention=attention,
        class_token=getattr(model, "cls_token", None) is not None,
        head_map_stage=head_map_stage,
    )
