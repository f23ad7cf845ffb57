"""The per-sample random draws of timm's training transform and Mixup, recorded instead of applied.

With a sample's RNGs seeded (see ``ofasearch.data.pipeline``), timm's own transform objects draw
the crop box and interpolation, the flip, the auto-augment ops with their magnitudes and
interpolations, and the erased box with its noise, in their order and from the generators they
always use; only their pixel work is skipped. The draws are cheap on the host; then
:func:`crop_views` cuts each image and :func:`finish_views` makes the pixels of the whole batch
with tensor ops (``ofasearch.data.image_ops``) wherever the batch is, a GPU too. So a view is
still a pure function of (seed, view, sample), and the auto-augment ops and erasing give the same
pixels as timm's PIL path.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from timm.data import Mixup
from timm.data.auto_augment import AutoAugment, RandAugment
from timm.data.mixup import cutmix_bbox_and_lam
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import MaybeToTensor, RandomResizedCropAndInterpolation
from torchvision.transforms import Normalize, RandomHorizontalFlip
from torchvision.transforms import functional as TF

from ofasearch.data import image_ops

__all__ = ["MixDraw", "OpCall", "ViewDraws", "ViewRecorder", "crop_views", "draw_mix", "finish_views", "mix_batch"]

_GEOMETRIC = ("ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "Rotate")
_NO_ARGUMENT = {"AutoContrast": image_ops.auto_contrast, "Equalize": image_ops.equalize, "Invert": image_ops.invert}
_ONE_ARGUMENT = {  # timm's op name -> the batched op taking one argument per image
    "Color": image_ops.color,
    "ColorIncreasing": image_ops.color,
    "Contrast": image_ops.contrast,
    "ContrastIncreasing": image_ops.contrast,
    "Brightness": image_ops.brightness,
    "BrightnessIncreasing": image_ops.brightness,
    "Sharpness": image_ops.sharpness,
    "SharpnessIncreasing": image_ops.sharpness,
    "Posterize": image_ops.posterize,
    "PosterizeIncreasing": image_ops.posterize,
    "PosterizeOriginal": image_ops.posterize,
    "Solarize": image_ops.solarize,
    "SolarizeIncreasing": image_ops.solarize,
    "SolarizeAdd": image_ops.solarize_add,
}
# every op of timm's RandAugment and AutoAugment policies; not the 3a policies' blur and desaturate
_SUPPORTED_OPS = frozenset((*_GEOMETRIC, *_NO_ARGUMENT, *_ONE_ARGUMENT))


@dataclass(frozen=True)
class OpCall:
    """One auto-augment op that fired: timm's op name, its level arguments and, for geometric
    ops, whether the drawn interpolation is bicubic (else bilinear)."""

    name: str
    args: tuple[Any, ...]
    bicubic: bool = False


@dataclass
class ViewDraws:
    """What timm's transform drew for one sample's view."""

    crop: tuple[int, int, int, int] | None = None  # (top, left, height, width) of the crop
    interpolation: Any = None  # torchvision's InterpolationMode for the crop's resize
    flip: bool = False
    ops: list[OpCall] = field(default_factory=list)
    erase: tuple[int, int, int, int] | None = None  # (top, left, height, width) in the output
    noise: torch.Tensor | None = None  # the erased box's values, normalised space (C, h, w)


class _ErasedBox:
    """Stands in for the image timm's RandomErasing erases: takes the box and the noise it writes
    instead of writing them (RandomErasing only asks an image its size and dtype)."""

    def __init__(self, channels: int, size: int, draws: ViewDraws):
        self.shape = torch.Size((channels, size, size))
        self.dtype = torch.float32
        self.draws = draws

    def size(self) -> torch.Size:
        return self.shape

    def __setitem__(self, key: tuple[slice, slice, slice], value: torch.Tensor) -> None:
        rows, cols = key[1], key[2]
        self.draws.erase = (rows.start, cols.start, rows.stop - rows.start, cols.stop - cols.start)
        self.draws.noise = value


def _recorded_op(name: str, calls: list[OpCall]) -> Callable[..., Any]:
    """An op function for timm's AugmentOp that records its call and leaves the image alone. A
    geometric op draws its interpolation as timm's op functions do, so the stream stays in step."""

    def record(img: Any, *args: Any, **kwargs: Any) -> Any:
        bicubic = False
        if name in _GEOMETRIC:
            resample = kwargs.get("resample", Image.Resampling.BICUBIC)
            if isinstance(resample, (list, tuple)):
                resample = random.choice(resample)
            bicubic = resample == Image.Resampling.BICUBIC
        calls.append(OpCall(name, tuple(args), bicubic))
        return img

    return record


class ViewRecorder:
    """Records the draws of timm's training transform ``train_tf`` (from ``create_transform``):
    RandomResizedCrop, flip, RandAugment or AutoAugment, the to-tensor and normalise steps and
    RandomErasing. Raises ValueError naming any other step (colour jitter, AugMix, blur), which
    only timm's PIL path can replay."""

    def __init__(self, train_tf: Any, *, channels: int, size: int):
        self.channels, self.size = channels, size
        self.fill: tuple[int, ...] = (128,) * channels  # what geometric ops show outside the source
        self._calls: list[OpCall] = []
        self._steps: list[Any] = []
        unsupported = []
        for step in train_tf.transforms:
            if isinstance(step, (RandAugment, AutoAugment)):
                step = copy.deepcopy(step)
                ops = step.ops if isinstance(step, RandAugment) else [op for sub in step.policy for op in sub]
                unsupported += [op.name for op in ops if op.name not in _SUPPORTED_OPS]
                for op in ops:
                    op.aug_fn = _recorded_op(op.name, self._calls)
                    fill = op.kwargs.get("fillcolor", self.fill)
                    self.fill = tuple(fill) if isinstance(fill, (tuple, list)) else (int(fill),) * channels
            elif isinstance(step, (MaybeToTensor, Normalize)):
                continue  # finish_views makes [0, 1] floats itself
            elif not isinstance(step, (RandomResizedCropAndInterpolation, RandomHorizontalFlip, RandomErasing)):
                unsupported.append(type(step).__name__)
            self._steps.append(step)
        if unsupported:
            raise ValueError(f"tensor views cannot replay {sorted(set(unsupported))}")

    def draw(self, image: torch.Tensor) -> ViewDraws:
        """The draws for one stored image (its size bounds the crop), from the RNGs as seeded."""
        draws = ViewDraws()
        for step in self._steps:
            if isinstance(step, RandomResizedCropAndInterpolation):
                draws.crop = step.get_params(image, step.scale, step.ratio)
                choices = step.interpolation
                draws.interpolation = random.choice(choices) if isinstance(choices, (tuple, list)) else choices
            elif isinstance(step, RandomHorizontalFlip):
                draws.flip = bool(torch.rand(1) < step.p)
            elif isinstance(step, RandomErasing):
                step(_ErasedBox(self.channels, self.size, draws))
            else:
                self._calls.clear()
                step(None)
                draws.ops = list(self._calls)
        return draws


def _affine_data(call: OpCall, size: int) -> tuple[float, ...]:
    """Pillow's affine data for timm's geometric op ``call`` on a ``size`` square."""
    (value,) = call.args
    if call.name == "Rotate":
        return image_ops.rotation_matrix(value, size, size)
    if call.name == "ShearX":
        return (1.0, value, 0.0, 0.0, 1.0, 0.0)
    if call.name == "ShearY":
        return (1.0, 0.0, 0.0, value, 1.0, 0.0)
    shift = value * size  # a share of the side
    if call.name == "TranslateXRel":
        return (1.0, 0.0, shift, 0.0, 1.0, 0.0)
    return (1.0, 0.0, 0.0, 0.0, 1.0, shift)


def _apply(name: str, images: torch.Tensor, calls: list[OpCall], fill: tuple[int, ...]) -> torch.Tensor:
    """timm's op ``name`` on ``images``, one call (with its arguments) per image."""
    if name in _GEOMETRIC:
        size = images.shape[-1]
        return image_ops.affine(images, [_affine_data(c, size) for c in calls], [c.bicubic for c in calls], fill)
    if name in _NO_ARGUMENT:
        return _NO_ARGUMENT[name](images)
    return _ONE_ARGUMENT[name](images, [c.args[0] for c in calls])


def crop_views(images: Sequence[torch.Tensor], draws: Sequence[ViewDraws], *, size: int) -> torch.Tensor:
    """Each stored uint8 image cropped and resized per its draws, where the image is (the call
    timm's crop makes on a tensor), stacked: (N, C, size, size) uint8."""
    crops = []
    for image, d in zip(images, draws, strict=True):
        if d.crop is not None:
            image = TF.resized_crop(image, *d.crop, [size, size], d.interpolation)
        crops.append(image)
    return torch.stack(crops)


def finish_views(
    crops: torch.Tensor,
    draws: Sequence[ViewDraws],
    *,
    fill: tuple[int, ...],
    mean: torch.Tensor,
    std: torch.Tensor,
) -> torch.Tensor:
    """The flips, auto-augment ops and erasing of ``draws`` on the uint8 ``crops``, for the whole
    batch wherever it is (a GPU too): floats in [0, 1] space, as the PIL pipeline's views."""
    device = crops.device
    flips = torch.tensor([d.flip for d in draws], device=device).view(-1, 1, 1, 1)
    batch = torch.where(flips, crops.flip(-1), crops)
    for slot in range(max((len(d.ops) for d in draws), default=0)):
        by_name: dict[str, list[int]] = {}
        for i, d in enumerate(draws):
            if slot < len(d.ops):
                by_name.setdefault(d.ops[slot].name, []).append(i)
        for name, chosen in by_name.items():
            at = torch.tensor(chosen, device=device)
            batch[at] = _apply(name, batch[at], [draws[i].ops[slot] for i in chosen], fill)
    out = batch.float().div_(255.0)
    mean, std = mean.to(device), std.to(device)
    for i, d in enumerate(draws):
        if d.erase is not None and d.noise is not None:
            top, left, h, w = d.erase
            out[i, :, top : top + h, left : left + w] = d.noise.to(device, non_blocking=True) * std + mean
    return out


@dataclass(frozen=True)
class MixDraw:
    """Mixup/CutMix of one sample with its partner: the weight of the sample (after timm's
    correction for a clipped box) and the CutMix box (top, bottom, left, right), or None."""

    lam: float
    box: tuple[int, int, int, int] | None = None


def draw_mix(mixup: Mixup, height: int, width: int) -> MixDraw:
    """timm's ``elem``-mode draws for the first of a pair, from NumPy's RNG as seeded: its lambda
    and whether to cut (``_params_per_elem``), then the CutMix box and corrected lambda."""
    lams, cut = mixup._params_per_elem(2)
    lam = float(lams[0])
    if lam == 1.0 or not cut[0]:
        return MixDraw(lam)
    box, lam = cutmix_bbox_and_lam(
        (1, height, width), lam, ratio_minmax=mixup.cutmix_minmax, correct_lam=mixup.correct_lam
    )
    return MixDraw(float(lam), tuple(int(b) for b in box))


def mix_batch(
    images: torch.Tensor,
    partners: torch.Tensor,
    draws: Sequence[MixDraw],
    targets: torch.Tensor,
    partner_targets: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each image with its partner per ``draws`` (CutMix: the box from the partner; Mixup:
    lam * image + (1 - lam) * partner) and the soft targets alike, for the whole batch."""
    n, _, h, w = images.shape
    device = images.device
    lam = torch.tensor([d.lam for d in draws], dtype=torch.float32, device=device).view(n, 1, 1, 1)
    boxes = torch.tensor([d.box or (0, 0, 0, 0) for d in draws], device=device)
    rows = torch.arange(h, device=device).view(1, h)
    cols = torch.arange(w, device=device).view(1, w)
    in_rows = (rows >= boxes[:, 0:1]) & (rows < boxes[:, 1:2])
    in_cols = (cols >= boxes[:, 2:3]) & (cols < boxes[:, 3:4])
    in_box = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)
    cut = torch.tensor([d.box is not None for d in draws], device=device).view(n, 1, 1, 1)
    blend = torch.tensor([d.box is None and d.lam != 1.0 for d in draws], device=device).view(n, 1, 1, 1)
    blended = images * lam + partners * (1 - lam)
    mixed = torch.where(cut & in_box, partners, torch.where(blend, blended, images))
    soft = targets * lam.view(n, 1) + partner_targets * (1 - lam.view(n, 1))
    return mixed, soft
