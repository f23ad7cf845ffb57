"""timm models as ofasearch sees them: creation, stage features, family, normalisation, weights.

No per-model code: every model that implements timm's ``forward_intermediates()`` and
``feature_info`` works. The paper's stages 1..4 are mapped onto the model's own feature list
(:func:`stage_indices`), and CNN-map vs token branches are decided from the model's actual
feature layout (:func:`is_token_model`), not from its name.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import timm.models
import torch
from torch import nn

from ofasearch.errors import SpecError

__all__ = [
    "ModelInfo",
    "StageShape",
    "build_model",
    "describe_model",
    "family_of",
    "load_weights",
    "normalization",
    "stage_indices",
    "unknown_model_message",
]


@functools.lru_cache(maxsize=1)
def _timm_names() -> tuple[str, ...]:
    return tuple(timm.list_models())


def _model_class(name: str) -> type[nn.Module] | None:
    cls = getattr(timm.models, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


def unknown_model_message(name: str) -> str | None:
    """None if ``name`` is a timm model name or class, else a message with close matches."""
    if timm.is_model(name) or _model_class(name) is not None:
        return None
    close = difflib.get_close_matches(name, _timm_names(), n=3, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return f"unknown timm model {name!r}{hint} (see `ofasearch models`)"


def build_model(
    name: str,
    kwargs: dict[str, Any] | None = None,
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    pretrained: bool = False,
) -> nn.Module:
    """Create a timm model for this data: classes and channels from the data, ``img_size`` too
    when the model takes it (unless ``kwargs`` set it)."""
    args = dict(kwargs or {})
    args.update(num_classes=num_classes, in_chans=in_chans)
    cls = _model_class(name) if not timm.is_model(name) else None
    if cls is None and unknown_model_message(name):
        raise SpecError([unknown_model_message(name) or ""])
    with_size = {"img_size": image_size, **args}
    for attempt in (with_size, args):
        try:
            if cls is not None:
                return cls(**attempt)
            return timm.create_model(name, pretrained=pretrained, **attempt)
        except TypeError as exc:
            if "img_size" in str(exc) and attempt is with_size and "img_size" not in args:
                continue  # this model has no img_size argument
            raise SpecError([f"model {name!r}: bad kwargs {kwargs}: {exc}"]) from None
        except (OSError, RuntimeError, ValueError) as exc:
            if pretrained and _looks_like_download_error(exc):
                raise SpecError(
                    [
                        f"model {name!r}: pretrained weights need the Hugging Face hub, which is "
                        f"unreachable here ({type(exc).__name__}); download them elsewhere and set "
                        "checkpoint: /path/to/weights.safetensors instead of pretrained: true"
                    ]
                ) from None
            raise
    raise AssertionError("unreachable")


def _looks_like_download_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(w in text for w in ("connect", "resolve", "offline", "hub", "http", "network", "url"))


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict (safetensors, or a torch file holding one; a ``state_dict``/``model``
    key is unwrapped). The classifier may differ when it was trained for other classes."""
    p = Path(path)
    if not p.is_file():
        raise SpecError([f"checkpoint {str(p)!r}: no such file"])
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:2]
        raise SpecError([f"checkpoint {str(p)!r} does not fit the model: {' '.join(first)}"]) from None


def normalization(model: nn.Module, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's own mean/std (timm pretrained config), averaged down for grayscale input."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN))
    std = tuple(cfg.get("std", timm.data.IMAGENET_DEFAULT_STD))
    if in_chans != len(mean):
        mean = (sum(mean) / len(mean),) * in_chans
        std = (sum(std) / len(std),) * in_chans
    return mean, std


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
    num_features: int
    stage_index: dict[int, int]  # paper stage -> forward_intermediates index
    stage_shapes: dict[int, StageShape]
    attention: bool

    @property
    def family(self) -> str:
        if not self.tokens:
            return "cnn"
        return "vit" if self.attention else "mlp"


def is_token_model(features: torch.Tensor, num_features: int) -> bool:
    """Token models keep channels last: ``forward_features`` gives (B, L, D) or (B, H, W, D)."""
    if features.ndim == 3:
        return True
    return features.ndim == 4 and features.shape[-1] == num_features and features.shape[1] != num_features


def describe_model(model: nn.Module, input_size: tuple[int, int, int]) -> ModelInfo:
    """Measure stage shapes and the model family with one forward pass on a zero batch."""
    index = stage_indices(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(1, *input_size)
            features = model.forward_features(x)
            inter = model.forward_intermediates(x, indices=sorted(index.values()), intermediates_only=True)
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
    attention = any("attention" in type(m).__name__.lower() for m in model.modules())
    return ModelInfo(
        tokens=is_token_model(features, num_features),
        prefix_tokens=int(getattr(model, "num_prefix_tokens", 0) or 0),
        num_features=num_features,
        stage_index=index,
        stage_shapes=shapes,
        attention=attention,
    )


def family_of(model: nn.Module, input_size: tuple[int, int, int]) -> str:
    """``cnn``, ``vit`` or ``mlp``, from the model's behaviour."""
    return describe_model(model, input_size).family
