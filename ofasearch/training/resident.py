"""The training set and its teacher-logit cache kept on the training device (``optim.data_on_device``).

On the host path every step gathers a batch of uint8 images on the CPU, augments it there, copies
it to the device and reads the cached teacher logits from a memmap. A CIFAR-sized train set (50k
images of 3x32x32 = 150 MB as uint8) and its cache views (50k x V x 100 float16 = 10 MB per view)
fit on any GPU many times over, so they can be moved once and each batch gathered, cropped and
flipped on the device by the same batched :func:`ofasearch.data.augment.augment`: the views are
the same pixels either way (a gather and a comparison, no float arithmetic), so the losses are
identical to the host path's (tested on the CPU, where ``on`` uses the same code).

Only views built by tensor ops can move: the ``pad`` crop, and ``rrc`` views of crop and flip only
(the paper's CNN recipes: timm's crop and flip objects on the uint8 tensors, per sample on the
device, from the stored native-size images), without mixing. timm's PIL pipeline (RandAugment,
colour jitter, random erasing) and Mixup/CutMix stay on the host, as do datasets decoded lazily
from disk (``ImageFiles``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ofasearch.data import ImageSet, Pipeline, resize_images
from ofasearch.data.imagefolder import ImageFiles
from ofasearch.training.logit_cache import LogitCache

__all__ = ["FREE_MEMORY_SHARE", "ResidentChoice", "ResidentTrainSet", "resident_bytes", "resident_choice"]

# auto keeps the data on a CUDA device when it takes at most this share of the memory free at the
# start of training: the rest is the model's, and trials packed on one GPU (fractional
# gpus_per_worker) each take their own copy
FREE_MEMORY_SHARE = 0.25


@dataclass(frozen=True)
class ResidentChoice:
    """Whether the train set goes to the device, and the one line that says why."""

    resident: bool
    reason: str


def resident_bytes(train: ImageSet, image_size: int, cache: LogitCache | None) -> int:
    """Device memory the resident train set takes: uint8 images at ``image_size`` (0: as stored),
    int64 labels and the whole float16 logit cache."""
    n, channels = len(train), int(train.images.shape[1])
    height, width = (image_size, image_size) if image_size else tuple(int(s) for s in train.images.shape[-2:])
    cache_bytes = cache.expected_bytes if cache is not None else 0
    return n * channels * height * width + n * 8 + cache_bytes


def _free_bytes(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def resident_choice(
    mode: str, pipeline: Pipeline, train: ImageSet, cache: LogitCache | None, device: torch.device
) -> ResidentChoice:
    """``off``: the host path. ``on``: the device path wherever the views are built in batch,
    whatever the device (the CPU too: tests and benchmarks). ``auto``: on a CUDA device when the
    data takes at most :data:`FREE_MEMORY_SHARE` of its free memory."""
    field = "optim.data_on_device"
    if mode == "off":
        return ResidentChoice(False, f"{field}: off")
    if not pipeline.batched:
        why = "timm's PIL transforms (colour jitter, AugMix, blur) run on the host"
        return ResidentChoice(False, f"{field}: {mode} -> off ({why})")
    if isinstance(train.images, ImageFiles):
        return ResidentChoice(False, f"{field}: {mode} -> off (the images are decoded from disk per batch)")
    size = resident_bytes(train, 0 if pipeline.crops_stored_images else pipeline.image_size, cache)
    size_mb = size / 2**20
    if mode == "on":
        return ResidentChoice(True, f"{field}: on ({size_mb:.1f} MB on {device})")
    free = _free_bytes(device)
    if free is None:
        return ResidentChoice(False, f"{field}: auto -> off (on {device.type} the host path is the device path)")
    limit = FREE_MEMORY_SHARE * free
    if size > limit:
        why = f"{size_mb:.1f} MB > {limit / 2**20:.0f} MB, a quarter of free"
        return ResidentChoice(False, f"{field}: auto -> off ({why})")
    return ResidentChoice(True, f"{field}: auto -> on ({size_mb:.1f} MB on {device})")


class ResidentTrainSet:
    """The train images (resized once to the run's size for the pad crop, as stored for rrc),
    labels and cached teacher logits on
    ``device``; :meth:`batch` is the host path's batch, made there."""

    def __init__(self, train: ImageSet, pipeline: Pipeline, cache: LogitCache | None, device: torch.device):
        images = train.images
        if not pipeline.crops_stored_images:  # the pad crop cuts the resized image, as each host batch does
            images = resize_images(images, pipeline.image_size)
        self.train = ImageSet(images.to(device), train.labels.to(device))
        self.logits = torch.from_numpy(cache.read_all()).to(device) if cache is not None else None
        self.pipeline = pipeline
        self.device = device

    def batch(
        self, idx: torch.Tensor, *, seed: int, view: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Images (view ``view`` of samples ``idx``), targets and cached logits, all on the device.
        ``idx`` stays on the host: the augmentation's per-sample keys are computed there."""
        images, labels = self.pipeline.train_batch(self.train, idx, seed=seed, view=view)
        cached = None
        if self.logits is not None:
            cached = self.logits[idx.to(self.device, non_blocking=True), view].float()
        return images, labels, cached
