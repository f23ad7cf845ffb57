"""``ofasearch models``: which timm models have usable stage features, and their shapes."""

from __future__ import annotations

import fnmatch

import timm

from ofasearch.models import build_model, describe_model

__all__ = ["print_models"]


def print_models(family: str | None = None, pattern: str = "*", image_size: int = 32) -> int:
    """Build each matching model (no weights) and print its family and stage shapes (C,H,W).
    Models that cannot give stage features at this size are skipped. Returns the count shown."""
    names = [n for n in timm.list_models() if fnmatch.fnmatch(n, pattern)]
    shown = 0
    for name in names:
        try:
            model = build_model(name, num_classes=10, in_chans=3, image_size=image_size)
            info = describe_model(model, (3, image_size, image_size))
        except Exception:  # noqa: BLE001 - a model that fails here is simply not usable
            continue
        if family and info.family != family:
            continue
        shapes = " ".join(f"{s}:{v.channels}x{v.height}x{v.width}" for s, v in sorted(info.stage_shapes.items()))
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:40s} {info.family:4s} {params:7.2f}M  stages {shapes}", flush=True)
        shown += 1
    print(f"{shown} of {len(names)} models usable at {image_size}px")
    return shown
