"""Models of the OFA-KD paper that timm does not ship, registered under the reference's names.

The paper's smallest Swin students, Swin-N and Swin-P, are defined in the reference code
(Hao840/OFAKD, ``custom_model/swin_transformer.py``) as timm Swin Transformers with their own
layout: depths (2, 2, 2, 2), heads (2, 4, 8, 16), patch 4, window 7 and a width of 64 (nano) or
48 (pico); every other argument is timm's default. Registered the same way (timm's
``register_model``), ``timm.create_model("swin_pico_patch4_window7_224")`` and every spec that
names them build exactly those models. Neither has published weights: the preprocessing is
timm's fallback the reference got (crop 0.9, bicubic, ImageNet mean/std).
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.swin_transformer import SwinTransformer

from ofasearch.errors import SpecError

__all__ = ["SWIN_LAYOUTS", "swin_nano_patch4_window7_224", "swin_pico_patch4_window7_224"]

# (embed_dim) of each reference Swin; the rest of the layout is shared
SWIN_LAYOUTS: dict[str, dict[str, Any]] = {
    name: {"patch_size": 4, "window_size": 7, "embed_dim": width, "depths": (2, 2, 2, 2), "num_heads": (2, 4, 8, 16)}
    for name, width in (("swin_nano_patch4_window7_224", 64), ("swin_pico_patch4_window7_224", 48))
}


def _cfg() -> dict[str, Any]:
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head.fc",
        "license": "apache-2.0",
    }


# timm's registry reads a module's ``default_cfgs`` when a model function is registered
default_cfgs = generate_default_cfgs({name: _cfg() for name in SWIN_LAYOUTS})


def _swin(name: str, pretrained: bool, kwargs: dict[str, Any]) -> SwinTransformer:
    if pretrained:
        raise SpecError([f"model {name!r}: no published weights; use checkpoint: auto (trained here) or PATH"])
    return build_model_with_cfg(SwinTransformer, name, pretrained=False, **{**SWIN_LAYOUTS[name], **kwargs})


@register_model
def swin_nano_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> SwinTransformer:
    """Swin-N of the OFA-KD paper (the reference's definition)."""
    return _swin("swin_nano_patch4_window7_224", pretrained, kwargs)


@register_model
def swin_pico_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> SwinTransformer:
    """Swin-P of the OFA-KD paper (the reference's definition)."""
    return _swin("swin_pico_patch4_window7_224", pretrained, kwargs)
