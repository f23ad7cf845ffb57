"""From stored uint8 images to model inputs: replayable training views and the eval transform.

A training view of sample i in view v is a pure function of (seed, v, i), whatever batch the
sample lands in, so the frozen teacher's logits on it can be cached once (see
``ofasearch.training.logit_cache``). Two crops:

- ``pad`` (ofasearch's default): random crop of the image zero-padded by 1/8, plus flip.
- ``rrc``: timm's ``create_transform`` training pipeline (RandomResizedCrop from the stored,
  native-resolution image to ``image_size``, flip, RandAugment/AutoAugment, colour jitter,
  normalisation, RandomErasing) applied per sample with Python's, NumPy's and torch's RNGs seeded
  from (seed, v, i) and restored afterwards; eval is timm's Resize + CenterCrop
  (``augment.eval_crop_pct``, ``eval_interpolation``).
  An image folder's images are cropped (and resized for eval) from their original files, at
  their own resolution and aspect ratio, as the paper's ImageNet pipeline does.

rrc views are tensor views (:attr:`Pipeline.tensor_views`) whenever every step of timm's
transform is one :mod:`ofasearch.data.view_draws` can replay (RandomResizedCrop, flip,
RandAugment, AutoAugment, random erasing): timm's own objects make their draws from the
(seed, v, i) stream on the host, with the pixel work skipped; each crop is cut on the uint8 image
where it is, and the auto-augment ops, flips and erasing run for the whole batch on the training
device (:mod:`ofasearch.data.image_ops`, Pillow's arithmetic: the same pixels as timm's PIL ops).
The crop's resize is torchvision's on tensors: bilinear pixels within one uint8 level of PIL's,
bicubic ones apart at sharp edges. Colour jitter, AugMix and blur keep timm's PIL pipeline per
sample on the host.

Mixup/CutMix are timm's ``Mixup`` draws in ``elem`` mode (its own lambda draw, CutMix box, lambda
correction and label smoothing), made per sample for the pair (i, partner) with NumPy seeded
from (seed, v, i) and applied to the whole batch at once; the partner of i in view v comes from a
fixed permutation of the training set per (seed, v) instead of from the sample's position in the
batch. So a mixed image, its soft label and the teacher's logits on it are again functions of
(seed, v, i). (timm's default mode draws one lambda per batch; per sample is its ``elem`` mode.)

Images leave the pipeline as floats in [0, 1] space (the distiller normalises each model):
the rrc pipeline normalises, erases and maps back, so RandomErasing's noise is N(0, 1) in the
normalised space, as in timm.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image
from timm.data import Mixup, create_transform
from timm.data.auto_augment import AugMixAugment, AutoAugment, RandAugment, posterize
from timm.data.mixup import one_hot
from torchvision.transforms import ColorJitter
from torchvision.transforms.functional import to_pil_image

from ofasearch.config import AugmentSpec
from ofasearch.data.augment import augment, sample_keys
from ofasearch.data.datasets import ImageSet, Splits, resize_images
from ofasearch.data.imagefolder import ImageFiles
from ofasearch.data.view_draws import ViewRecorder, crop_views, draw_mix, finish_views, mix_batch

__all__ = ["Pipeline", "TrainBatch", "resize_images"]

TrainBatch = tuple[torch.Tensor, torch.Tensor]
"""Images (B, C, S, S) as floats in [0, 1] space and targets: class indices (B,), or soft labels
(B, classes) when images are mixed."""

_PARTNER_SALT = 0x5EED  # separates the partner permutation's stream from the per-sample keys
_MIX_SALT = 0x3A7


@contextmanager
def _seeded_rngs() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's CPU RNG states afterwards: seeding per sample must not
    change what the rest of training draws (dropout, the sampler)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _posterize(img: Image.Image, bits_to_keep: int, **kwargs: object) -> Image.Image:
    """timm's posterize, also at 0 bits. timm 1.0.31's PosterizeIncreasing asks for 0 bits at
    magnitude 10 (RandAugment m9 with mstd 0.5 draws that ~2 % of the time); Pillow 13 rejects
    it where older Pillow kept no bits (a black image), which is what this returns."""
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return posterize(img, bits_to_keep, **kwargs)


def _allow_zero_bit_posterize(transform: object) -> None:
    """Give the posterize ops of ``transform``'s auto-augment policies :func:`_posterize` (only
    this object's ops: timm itself is left as it is)."""
    for t in getattr(transform, "transforms", ()):
        ops = t.ops if isinstance(t, (RandAugment, AugMixAugment)) else ()
        if isinstance(t, AutoAugment):
            ops = [op for sub in t.policy for op in sub]
        for op in ops:
            if op.aug_fn is posterize:
                op.aug_fn = _posterize


def _seed_all(key: int) -> None:
    """Seed the draws of a sample's view: Python's and NumPy's RNGs and torch's CPU generator (not
    the GPU's, which dropout on a GPU keeps using undisturbed)."""
    random.seed(key)
    np.random.seed(key)
    torch.default_generator.manual_seed(key)


class Pipeline:
    """The train and eval transforms of one run: ``settings`` (the config's ``augment``) for
    ``splits``. The rrc pipeline normalises with the dataset's mean/std (RandomErasing's noise
    lives in that space), whichever normalisation the models get afterwards, so the views depend
    on the data and settings only, never on the student (a logit cache serves every student)."""

    def __init__(self, settings: AugmentSpec, splits: Splits):
        mean, std = splits.mean or (0.5,) * splits.in_chans, splits.std or (0.25,) * splits.in_chans
        self.settings = settings
        self.image_size = splits.image_size
        self.flip = splits.flip
        self.enabled = splits.augment  # data.augment: false turns every random transform off
        self.num_classes = splits.num_classes
        self.num_train = len(splits.train)
        # an image folder under rrc: crops and the eval resize start from each original file
        self.from_originals = settings.crop == "rrc" and isinstance(splits.train.images, ImageFiles)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self._partners: tuple[int, torch.Tensor] | None = None
        self._train_tf = None
        self._eval_tf = None
        if settings.crop == "rrc":
            self._train_tf = create_transform(
                self.image_size,
                is_training=True,
                hflip=0.5 if self.flip else 0.0,
                color_jitter=float(settings.color_jitter) or None,
                auto_augment=settings.auto_augment,
                interpolation="random",  # timm train.py's default train interpolation
                mean=tuple(mean),
                std=tuple(std),
                re_prob=float(settings.re_prob),
                re_mode="pixel",  # timm train.py's default
            )
            _allow_zero_bit_posterize(self._train_tf)
        cut = settings.eval_cut  # rrc: timm's resize + centre crop; pad: a square resize (below)
        if cut is not None:
            self._eval_tf = create_transform(
                self.image_size, is_training=False, crop_pct=cut[0], interpolation=cut[1], normalize=False
            )
        # rrc views whose steps the recorder knows: timm's draws on the host, pixels in batch anywhere
        self._recorder = None
        if self._train_tf is not None:
            try:
                self._recorder = ViewRecorder(self._train_tf, channels=splits.in_chans, size=self.image_size)
            except ValueError:
                self._recorder = None  # colour jitter, AugMix, blur: timm's PIL pipeline per sample
        self._mixup = None
        if settings.mixes:
            self._mixup = Mixup(
                mixup_alpha=float(settings.mixup),
                cutmix_alpha=float(settings.cutmix),
                mode="elem",
                label_smoothing=float(settings.label_smoothing),
                num_classes=self.num_classes,
            )

    @property
    def eval_crop_pct(self) -> float | None:
        """The centre crop's share of the eval resize (rrc), or None: a square resize, no crop."""
        cut = self.settings.eval_cut
        return cut[0] if cut else None

    @property
    def mixes(self) -> bool:
        """Whether training targets are soft (mixed images)."""
        return self._mixup is not None and self.enabled

    @property
    def tensor_views(self) -> bool:
        """Whether rrc views are recorded draws rendered by tensor ops (:mod:`.view_draws`) rather
        than timm's PIL pipeline per sample; :meth:`use_pil_views` turns them off."""
        return self._recorder is not None

    def use_pil_views(self) -> None:
        """Build rrc views with timm's PIL pipeline per sample (benchmarks and equality tests)."""
        self._recorder = None

    @property
    def batched(self) -> bool:
        """Whether training views are built by tensor ops (the ``pad`` crop, or :attr:`tensor_views`),
        so on whatever device the images are; timm's PIL pipeline works on the host."""
        return self._train_tf is None or self.tensor_views

    @property
    def crops_stored_images(self) -> bool:
        """Whether views cut the stored images as they are (rrc) rather than after resizing them
        to the input size (pad)."""
        return self._train_tf is not None

    def describe(self) -> str:
        """One line for logs: what the training views are made of, and where their pixels are made."""
        if not self.enabled:
            return "training views: no augmentation"
        s = self.settings
        parts = [f"crop {s.crop}"]
        # colour jitter as far as timm's transform kept it (create_transform drops it under most policies)
        jitters = self._train_tf is not None and any(isinstance(t, ColorJitter) for t in self._train_tf.transforms)
        shown = [k for k in ("auto_augment", "color_jitter", "re_prob") if k != "color_jitter" or jitters]
        parts += [f"{k} {getattr(s, k)}" for k in shown if getattr(s, k)]
        parts += [f"{k} {getattr(s, k)}" for k in ("mixup", "cutmix", "label_smoothing") if getattr(s, k)]
        if self.batched:
            where = "pixels made in batch on the training device"
        else:  # colour jitter, AugMix, blur
            where = "timm's PIL pipeline per sample on the host"
        return f"training views: {', '.join(parts)} ({where})"

    # ------------------------------------------------------------------------------ eval
    def eval_images(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Stored uint8 images (a batch, or a list of originals of any size) as the model sees
        them at evaluation, floats in [0, 1]."""
        if self._eval_tf is not None:
            if isinstance(images, list):
                return torch.stack([self._eval_tf(image) for image in images]).float().div_(255.0)
            return self._eval_tf(images).float().div_(255.0)
        return resize_images(images, self.image_size).float().div_(255.0)

    def eval_batch(self, data: ImageSet, index: torch.Tensor) -> torch.Tensor:
        """Samples ``index`` of ``data`` as the model sees them at evaluation."""
        return self.eval_images(self._stored(data, index))

    def _stored(self, data: ImageSet, index: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """The images transforms start from: the originals of an image folder under rrc, else the
        stored batch."""
        if self.from_originals:
            assert isinstance(data.images, ImageFiles)
            return data.images.originals(index.cpu())
        return data.images[index]

    # ------------------------------------------------------------------------------ train
    def train_batch(
        self, data: ImageSet, index: torch.Tensor, *, seed: int, view: int, device: torch.device | None = None
    ) -> TrainBatch:
        """The training view ``view`` of samples ``index`` of ``data`` (replayable) and targets, on
        ``device`` (default: where ``data`` is). Tensor views move the stored images there before
        their batched work (:attr:`batched`); timm's PIL views are made on the host."""
        index = index.cpu()  # the per-sample keys are computed on the host
        at = index.to(data.labels.device, non_blocking=True)
        device = data.labels.device if device is None else device
        labels = data.labels[at].to(device, non_blocking=True)
        if not self.enabled:
            return self.eval_batch(data, at).to(device, non_blocking=True), labels
        images = self._augment(self._stored(data, at), index, seed=seed, view=view, device=device)
        if self._mixup is None:
            return images, labels
        partners = self.partners(index, seed=seed, view=view)
        partner_images = self._augment(self._stored(data, partners), partners, seed=seed, view=view, device=device)
        return self._mix(images, labels, partner_images, data.labels[partners].to(device), index, seed=seed, view=view)

    def _augment(
        self,
        images: torch.Tensor | list[torch.Tensor],
        index: torch.Tensor,
        *,
        seed: int,
        view: int,
        device: torch.device,
    ) -> torch.Tensor:
        if self._train_tf is None:
            assert isinstance(images, torch.Tensor)  # originals are only taken under rrc
            resized = resize_images(images, self.image_size).to(device, non_blocking=True)
            return augment(resized, index, seed=seed, view=view, flip=self.flip)
        keys = sample_keys(index, seed, view).tolist()
        with _seeded_rngs():
            if self._recorder is not None:  # timm's draws here, the pixels in batch on the device
                draws = []
                for image, key in zip(images, keys, strict=True):
                    _seed_all(int(key))
                    draws.append(self._recorder.draw(image))
                crops = crop_views(images, draws, size=self.image_size).to(device, non_blocking=True)
                return finish_views(crops, draws, fill=self._recorder.fill, mean=self._mean, std=self._std)
            out = []
            for image, key in zip(images, keys, strict=True):
                _seed_all(int(key))
                pil = to_pil_image(image[0] if image.shape[0] == 1 else image)
                out.append(self._train_tf(pil))
        return (torch.stack(out) * self._std + self._mean).to(device, non_blocking=True)  # back to [0, 1] space

    def partners(self, index: torch.Tensor, *, seed: int, view: int) -> torch.Tensor:
        """The sample each of ``index`` is mixed with in ``view``: its successor in a fixed
        permutation of the training set per (seed, view), one cycle, so never itself."""
        if self._partners is None or self._partners[0] != view:
            generator = torch.Generator().manual_seed(int(sample_keys(torch.tensor([_PARTNER_SALT]), seed, view)[0]))
            order = torch.randperm(self.num_train, generator=generator)
            successor = torch.empty_like(order)
            successor[order] = order.roll(-1)
            self._partners = (view, successor)
        return self._partners[1][index]

    def _mix(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        partner_images: torch.Tensor,
        partner_labels: torch.Tensor,
        index: torch.Tensor,
        *,
        seed: int,
        view: int,
    ) -> TrainBatch:
        """timm's per-sample Mixup/CutMix draws (NumPy seeded per sample), applied to the batch."""
        assert self._mixup is not None
        keys = sample_keys(index, seed, view * 2 + _MIX_SALT).tolist()
        height, width = images.shape[-2:]
        draws = []
        with _seeded_rngs():
            for key in keys:
                np.random.seed(int(key))
                draws.append(draw_mix(self._mixup, height, width))
        smoothing = float(self.settings.label_smoothing)
        off = smoothing / self.num_classes
        on = 1.0 - smoothing + off
        targets = one_hot(labels, self.num_classes, on_value=on, off_value=off)
        partner_targets = one_hot(partner_labels, self.num_classes, on_value=on, off_value=off)
        return mix_batch(images, partner_images, draws, targets, partner_targets)
