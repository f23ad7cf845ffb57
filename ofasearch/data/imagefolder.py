"""Folders of image files (``data.dataset: imagefolder``), read lazily.

Only the file list is read up front; an image is decoded when a batch asks for it, by a pool of
threads (PIL and torch release the GIL while decoding and resizing): resized by the
``data.resize`` policy for the ``pad`` crop, or at its own resolution for ``rrc`` crops and their
eval resize + center crop (:meth:`ImageFiles.originals`). So a folder far larger than RAM works,
every trial starts in the time it takes to list the files, and each batch costs only its own
images.

Layouts, with splits named as people name them:

- ``train/`` + ``test/``: validation held out of train (``data.val_fraction`` / ``val_size``);
- ``train/`` + ``val/`` (or ``validation/``) + ``test/``: each as named;
- ``train/`` + ``val/`` (or ``validation/``) without ``test/``: val as named, the test split
  held out of train (:data:`TEST_FRACTION`, seeded);
- flat class folders (``root/<class>/*.png``): test held out of all images, validation out of
  the rest, both seeded.

Every class folder of torchvision's ``ImageFolder`` convention; classes are the sorted folder
names of train (or of the root, when flat), and a val/test class train does not have is an error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from ofasearch.config.schema import RESIZE_POLICIES  # data.resize; None means "squash"
from ofasearch.errors import SpecError

__all__ = ["IMAGE_EXTENSIONS", "RESIZE_POLICIES", "TEST_FRACTION", "FolderSplits", "ImageFiles", "read_imagefolder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TEST_FRACTION = 0.2  # of the images, held out as test when the folder has no test split
VAL_NAMES = ("val", "validation")


def decode_original(path: str) -> torch.Tensor:
    """One image file as uint8 (3, h, w) RGB at its own resolution."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    with Image.open(path) as img:
        return pil_to_tensor(img.convert("RGB"))


def decode(path: str, size: int, policy: str) -> torch.Tensor:
    """One image file as uint8 (3, size, size): RGB, resized by ``policy``:
    ``squash`` stretches to a square (the aspect ratio is lost), ``center-crop`` scales the
    shorter side to ``size`` and cuts the middle, ``pad`` scales the longer side to ``size`` and
    pads with black (nothing is lost or stretched)."""
    from torchvision.transforms.functional import center_crop, pad, resize

    image = decode_original(path)
    h, w = image.shape[-2:]
    if policy == "squash" or h == w:
        return resize(image, [size, size], antialias=True)
    if policy == "center-crop":
        return center_crop(resize(image, size, antialias=True), [size, size])
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    image = resize(image, [nh, nw], antialias=True)
    left, top = (size - nw) // 2, (size - nh) // 2
    return pad(image, [left, top, size - nw - left, size - nh - top], fill=0)


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="ofasearch-decode")


@dataclass(frozen=True)
class ImageFiles:
    """Image files that index like a uint8 (N, 3, size, size) tensor: ``files[idx]`` decodes
    those images (in parallel) and returns the tensor; :meth:`take` is a lazy subset."""

    paths: tuple[str, ...]
    size: int
    policy: str = "squash"
    channels: int = field(default=3)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.channels, self.size, self.size)

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    def take(self, index: torch.Tensor | Sequence[int]) -> ImageFiles:
        chosen = torch.as_tensor(index, dtype=torch.long).tolist()
        return ImageFiles(tuple(self.paths[i] for i in chosen), self.size, self.policy, self.channels)

    def __getitem__(self, index: torch.Tensor | Sequence[int] | int) -> torch.Tensor:
        if isinstance(index, int):
            return decode(self.paths[index], self.size, self.policy)
        chosen = torch.as_tensor(index, dtype=torch.long).tolist()
        if not chosen:
            return torch.empty((0, self.channels, self.size, self.size), dtype=torch.uint8)
        images = _pool().map(lambda i: decode(self.paths[i], self.size, self.policy), chosen)
        return torch.stack(list(images))

    def originals(self, index: torch.Tensor | Sequence[int]) -> list[torch.Tensor]:
        """Images ``index`` at their own resolution, uint8 (3, h, w) each, decoded in parallel:
        what RandomResizedCrop and the eval resize + center crop start from, so no image is
        squashed to the training size before it is cropped."""
        chosen = torch.as_tensor(index, dtype=torch.long).tolist()
        return list(_pool().map(lambda i: decode_original(self.paths[i]), chosen))

    def __iter__(self):  # one image at a time, like iterating a tensor
        return (self[i] for i in range(len(self)))


@dataclass
class FolderSplits:
    """What :func:`read_imagefolder` found: the files of each split (``val`` None: hold it out
    of train), the class names and where each split came from, as ``validate`` prints it."""

    train: tuple[ImageFiles, torch.Tensor]
    test: tuple[ImageFiles, torch.Tensor]
    val: tuple[ImageFiles, torch.Tensor] | None
    classes: list[str]
    origin: dict[str, str]


def _class_files(folder: Path) -> dict[str, list[str]]:
    """{class folder name: its image files, sorted}, for the class folders under ``folder``."""
    out = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(str(f) for f in sub.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        if files:
            out[sub.name] = files
    return out


def _labelled(
    by_class: dict[str, list[str]], classes: list[str], where: Path, size: int, policy: str
) -> tuple[ImageFiles, torch.Tensor]:
    unknown = sorted(set(by_class) - set(classes))
    if unknown:
        raise SpecError([f"data.root: {where} has class folders train/ does not have: {', '.join(unknown[:5])}"])
    paths = [p for name in classes for p in by_class.get(name, [])]
    labels = [i for i, name in enumerate(classes) for _ in by_class.get(name, [])]
    return ImageFiles(tuple(paths), size, policy), torch.tensor(labels, dtype=torch.int64)


def _split_off(
    files: ImageFiles, labels: torch.Tensor, fraction: float, seed: int
) -> tuple[tuple[ImageFiles, torch.Tensor], tuple[ImageFiles, torch.Tensor]]:
    """(rest, held-out fraction), by a fixed permutation."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n = max(1, int(round(len(order) * fraction)))
    held, rest = order[:n], order[n:]
    return (files.take(rest), labels[rest]), (files.take(held), labels[held])


def read_imagefolder(root: str, size: int, policy: str | None, seed: int) -> FolderSplits:
    """List the files of ``root`` (see the module's layouts); nothing is decoded here."""
    policy = policy or "squash"
    base = Path(root)
    if root == "auto" or not base.is_dir():
        raise SpecError(
            [f"data.root: imagefolder needs a folder of class folders (or train/, val/, test/), got {root!r}"]
        )
    vals = [base / n for n in VAL_NAMES if (base / n).is_dir()]
    if len(vals) > 1:
        raise SpecError([f"data.root: {root!r} has both val/ and validation/; keep one"])
    test_dir = base / "test"
    if (base / "train").is_dir():
        by_class = _class_files(base / "train")
        if not by_class:
            raise SpecError([f"data.root: {base / 'train'} has no class folders with images"])
        classes = sorted(by_class)
        train = _labelled(by_class, classes, base / "train", size, policy)
        val = _labelled(_class_files(vals[0]), classes, vals[0], size, policy) if vals else None
        origin = {"train": "train/", "val": f"{vals[0].name}/" if vals else "held out of train/"}
        if test_dir.is_dir():
            test = _labelled(_class_files(test_dir), classes, test_dir, size, policy)
            origin["test"] = "test/"
        elif vals:
            train, test = _split_off(*train, TEST_FRACTION, seed)
            origin["test"] = f"held out of train/ ({TEST_FRACTION:.0%}, seed {seed})"
            origin["val"] = f"{vals[0].name}/"
        else:
            raise SpecError([f"data.root: {root!r} has train/ but neither val/, validation/ nor test/"])
        return FolderSplits(train, test, val, classes, origin)
    if vals or test_dir.is_dir():
        raise SpecError([f"data.root: {root!r} has {'val' if vals else 'test'}/ but no train/"])
    by_class = _class_files(base)
    if not by_class:
        raise SpecError([f"data.root: {root!r} holds no class folders with images ({', '.join(IMAGE_EXTENSIONS)})"])
    classes = sorted(by_class)
    everything = _labelled(by_class, classes, base, size, policy)
    train, test = _split_off(*everything, TEST_FRACTION, seed)
    origin = {
        "train": "the class folders",
        "val": "held out of train",
        "test": f"held out of the class folders ({TEST_FRACTION:.0%}, seed {seed})",
    }
    return FolderSplits(train, test, None, classes, origin)
