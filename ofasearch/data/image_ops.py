"""timm's auto-augment image ops on a batch of uint8 images, each image with its own parameter.

RandAugment draws an op and a magnitude per image. torchvision's functional ops take one
parameter per call, so a batch would cost one call per image, and kornia's enhance ops follow
other formulas than Pillow's (additive brightness, HSV saturation), so they would not give timm's
views. These ops take a tensor of parameters, one per image, run the whole batch in a few tensor
ops on whatever device it is on, and reproduce the Pillow arithmetic timm's ops run
(``timm.data.auto_augment``): blends in float32 truncated to uint8, Pillow's greyscale weights, its
3x3 smoothing, and affine resampling at pixel centres in float64 with its bilinear and bicubic
kernels, clamped borders and the fill colour outside the source. Equalize is torchvision's,
which follows Pillow's.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms.v2.functional import equalize as _tv_equalize

__all__ = [
    "affine",
    "auto_contrast",
    "brightness",
    "color",
    "contrast",
    "equalize",
    "invert",
    "posterize",
    "rotation_matrix",
    "sharpness",
    "solarize",
    "solarize_add",
]


def _per_image(values: torch.Tensor | list[float], images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-image parameters as an (N, 1, 1, 1) tensor on the images' device."""
    return torch.as_tensor(values, dtype=dtype, device=images.device).view(-1, 1, 1, 1)


def _truncate(values: torch.Tensor) -> torch.Tensor:
    """Float pixels to uint8 as Pillow stores them: clipped to [0, 255], then truncated."""
    return values.clamp_(0.0, 255.0).to(torch.uint8)


def _blend(degenerate: torch.Tensor, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's ``Image.blend(degenerate, images, factor)``: in1 + factor * (in2 - in1) in float32,
    truncated (``factor``: (N, 1, 1, 1) float32)."""
    low = degenerate.to(torch.float32)
    return _truncate(low + factor * (images.to(torch.float32) - low))


def grey(images: torch.Tensor) -> torch.Tensor:
    """Pillow's ``convert("L")``: (299 R + 587 G + 114 B) / 1000 in its 16-bit fixed point,
    rounded; a one-channel image is its own grey."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.to(torch.int32).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(1)


def color(images: torch.Tensor, factor: torch.Tensor | list[float]) -> torch.Tensor:
    """``ImageEnhance.Color``: blend with the image's grey (a one-channel image is unchanged)."""
    return _blend(grey(images).expand_as(images), images, _per_image(factor, images, torch.float32))


def contrast(images: torch.Tensor, factor: torch.Tensor | list[float]) -> torch.Tensor:
    """``ImageEnhance.Contrast``: blend with the grey image's mean, rounded."""
    mean = grey(images).to(torch.float64).mean(dim=(1, 2, 3), keepdim=True)
    degenerate = torch.floor(mean + 0.5).expand_as(images)
    return _blend(degenerate, images, _per_image(factor, images, torch.float32))


def brightness(images: torch.Tensor, factor: torch.Tensor | list[float]) -> torch.Tensor:
    """``ImageEnhance.Brightness``: blend with black."""
    return _blend(torch.zeros_like(images), images, _per_image(factor, images, torch.float32))


def sharpness(images: torch.Tensor, factor: torch.Tensor | list[float]) -> torch.Tensor:
    """``ImageEnhance.Sharpness``: blend with Pillow's SMOOTH filter (3x3, centre 5, others 1,
    over 13, summed in float32 row by row and rounded; the one-pixel border is kept)."""
    x = images.to(torch.float32)
    centre, side = torch.tensor(5 / 13, dtype=torch.float32), torch.tensor(1 / 13, dtype=torch.float32)

    def kernel_row(r: torch.Tensor, middle: torch.Tensor) -> torch.Tensor:  # Pillow's order of additions
        return (r[..., :-2] * side + r[..., 1:-1] * middle) + r[..., 2:] * side

    below, level, above = x[..., 2:, :], x[..., 1:-1, :], x[..., :-2, :]
    total = (kernel_row(below, side) + kernel_row(level, centre)) + kernel_row(above, side)
    smooth = total.add_(0.5).floor_().clamp_(0.0, 255.0)
    degenerate = images.clone()
    degenerate[..., 1:-1, 1:-1] = smooth.to(torch.uint8)
    return _blend(degenerate, images, _per_image(factor, images, torch.float32))


def posterize(images: torch.Tensor, bits: torch.Tensor | list[int]) -> torch.Tensor:
    """Keep the ``bits`` high bits of each channel (8: unchanged, 0: black)."""
    keep = _per_image(bits, images, torch.int32).clamp(0, 8)
    mask = ((0xFF << (8 - keep)) & 0xFF).to(torch.uint8)
    return images & mask


def solarize(images: torch.Tensor, thresh: torch.Tensor | list[int]) -> torch.Tensor:
    """Invert the pixels at or above ``thresh``."""
    at_least = images.to(torch.int32) >= _per_image(thresh, images, torch.int32)
    return torch.where(at_least, 255 - images, images)


def solarize_add(images: torch.Tensor, add: torch.Tensor | list[int], thresh: int = 128) -> torch.Tensor:
    """Add ``add`` to the pixels below ``thresh`` (at most 255)."""
    x = images.to(torch.int32)
    added = (x + _per_image(add, images, torch.int32)).clamp_(max=255)
    return torch.where(x < thresh, added, x).to(torch.uint8)


def invert(images: torch.Tensor) -> torch.Tensor:
    return 255 - images


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per image and channel (torchvision's, as Pillow's ``equalize``)."""
    return _tv_equalize(images)


def auto_contrast(images: torch.Tensor) -> torch.Tensor:
    """Pillow's ``autocontrast``: per image and channel, stretch [min, max] to [0, 255]
    (``int(i * scale + offset)`` in float64); a flat channel is unchanged."""
    x = images.to(torch.float64)
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    flat = high <= low
    span = torch.where(flat, torch.ones_like(high), high - low)
    scale = torch.full_like(span, 255.0) / span  # a true division: ``255.0 / span`` multiplies by 1 / span
    offset = -low * scale
    stretched = _truncate(x * scale + offset)
    return torch.where(flat, images, stretched)


def rotation_matrix(degrees: float, width: int, height: int) -> tuple[float, ...]:
    """The affine data Pillow's ``Image.rotate`` uses (output to input, about the centre)."""
    angle = -math.radians(degrees % 360.0)
    a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
    d, e = round(-math.sin(angle), 15), round(math.cos(angle), 15)
    cx, cy = width / 2, height / 2
    c = a * -cx + b * -cy + 0.0 + cx
    f = d * -cx + e * -cy + 0.0 + cy
    return (a, b, c, d, e, f)


def _cubic(v0: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor, v3: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Pillow's cubic through four samples at fraction ``d`` past the second."""
    p2 = -v0 + v2
    p3 = 2 * (v0 - v1) + v2 - v3
    p4 = -v0 + v1 - v2 + v3
    return v1 + d * (p2 + d * (p3 + d * p4))


def _linear(v0: torch.Tensor, v1: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return v0 + (v1 - v0) * d


def _resample(images: torch.Tensor, u: torch.Tensor, v: torch.Tensor, bicubic: bool) -> torch.Tensor:
    """Sample float64 ``images`` (N, C, H, W) at source points (u, v) (N, H, W) with Pillow's
    kernel; neighbours beyond the border repeat it."""
    n, c, h, w = images.shape
    taps = 4 if bicubic else 2
    x, y = u - 0.5, v - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    dx, dy = (x - x0).unsqueeze(1), (y - y0).unsqueeze(1)
    first = -1 if bicubic else 0
    cols = [(x0 + first + k).clamp_(0, w - 1).long() for k in range(taps)]
    rows = [(y0 + first + k).clamp_(0, h - 1).long() for k in range(taps)]
    flat = images.reshape(n, c, h * w)
    combine = _cubic if bicubic else _linear
    lines = []
    for row in rows:
        samples = [flat.gather(2, (row * w + col).view(n, 1, -1).expand(n, c, -1)).view(n, c, h, w) for col in cols]
        lines.append(combine(*samples, dx))
    return combine(*lines, dy)


def affine(
    images: torch.Tensor,
    matrices: torch.Tensor | list[tuple[float, ...]],
    bicubic: torch.Tensor | list[bool],
    fill: tuple[int, ...],
) -> torch.Tensor:
    """Pillow's ``Image.transform(size, AFFINE, data, resample, fillcolor=fill)`` per image:
    ``matrices`` (N, 6) map an output pixel's centre to its source point; a source point outside
    the image takes ``fill``; ``bicubic`` picks the kernel per image (else bilinear)."""
    n, c, h, w = images.shape
    m = torch.as_tensor(matrices, dtype=torch.float64, device=images.device).view(n, 6, 1, 1)
    bicubic = torch.as_tensor(bicubic, dtype=torch.bool, device=images.device).view(n)
    ys = torch.arange(h, dtype=torch.float64, device=images.device).view(1, h, 1) + 0.5
    xs = torch.arange(w, dtype=torch.float64, device=images.device).view(1, 1, w) + 0.5
    u = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]
    v = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    inside = ((u >= 0) & (u < w) & (v >= 0) & (v < h)).unsqueeze(1)
    out = images.to(torch.float64)
    for kernel in (False, True):
        chosen = (bicubic == kernel).nonzero().flatten()
        if len(chosen):
            out[chosen] = _resample(out[chosen], u[chosen], v[chosen], kernel)
    colour = torch.tensor(fill, dtype=torch.uint8, device=images.device).view(1, -1, 1, 1).expand(n, c, h, w)
    return torch.where(inside, _truncate(out), colour)
