"""Replayable augmentation: the crop and flip of sample i in view v depend only on (seed, v, i)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["augment", "sample_keys"]


def sample_keys(index: torch.Tensor, seed: int, view: int) -> torch.Tensor:
    """A pseudo-random non-negative int per sample, a pure function of (seed, view, index): O(batch)
    work, independent of batch order and of the dataset size (integer hash, wrapping int64)."""
    k = index.to(torch.int64) * 1_103_515_245 + (seed * 1_000_003 + view) * 2_654_435_761
    for shift, mult in ((16, 0x45D9F3B), (16, 0x45D9F3B), (16, 1)):
        k = (k ^ (k >> shift)) * mult
    return k & 0x7FFFFFFF


def augment(
    images: torch.Tensor,
    index: torch.Tensor,
    *,
    seed: int,
    view: int,
    flip: bool,
    pad: int | None = None,
) -> torch.Tensor:
    """Random crop (zero padding) + optional horizontal flip of uint8 images, as floats in [0, 1].

    Sample ``index[i]`` in view ``view`` always gets the same crop and flip for a given seed, so a
    view can be replayed (for example to cache the teacher's logits on it).
    """
    n, _, h, w = images.shape
    pad = max(1, h // 8) if pad is None else pad
    keys = sample_keys(index.cpu(), seed, view)
    dy = (keys % (2 * pad + 1)).to(images.device)
    dx = ((keys // (2 * pad + 1)) % (2 * pad + 1)).to(images.device)
    mirror = ((keys // (2 * pad + 1) ** 2) % 2 == 1).to(images.device) & flip
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = dy[:, None] + torch.arange(h, device=images.device)[None]
    cols = dx[:, None] + torch.arange(w, device=images.device)[None]
    cols = torch.where(mirror[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).float().div_(255.0)
