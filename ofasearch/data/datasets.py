"""Datasets held in memory as uint8 tensors, a fixed train/val/test split, seeded augmentation.

The supported datasets are small enough to live in RAM, which keeps the training loop free of
data-loader processes (2-core machines, Ray workers) and makes every augmentation replayable:
the crop/flip of sample i in view v is a pure function of (seed, v, i).
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ofasearch.config import DataSpec
from ofasearch.config.registry import get_dataset
from ofasearch.errors import SpecError

__all__ = ["LOADERS", "ImageSet", "Loader", "Splits", "find_fashion_mnist", "load_splits"]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_VAL_FRACTION = 0.1  # of train (after train_subset), when neither val_size nor val_fraction is given
SPLIT_SEED = 0  # the val split never depends on the run's seed: all runs score on the same images
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index])


@dataclass
class Splits:
    """Train (for gradients), val (for scoring a search) and test (reported at the end)."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    num_classes: int
    in_chans: int
    image_size: int
    flip: bool
    augment: bool = True

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)

    @property
    def model_args(self) -> dict[str, int]:
        """What every model built for this data takes from it (see ``models.build_model``)."""
        return {"num_classes": self.num_classes, "in_chans": self.in_chans, "image_size": self.image_size}


# ------------------------------------------------------------------------------ sources


def _data_roots(root: str) -> list[Path]:
    if root != "auto":
        return [Path(root)]
    roots = [Path(p) for p in os.environ.get("OFASEARCH_DATA", "").split(os.pathsep) if p]
    return roots + [_user_data_dir(), DEBIAN_FASHION_MNIST.parent]


def _user_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ofasearch"


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_fashion_mnist(root: str = "auto") -> Path | None:
    """The first folder holding the four Fashion-MNIST idx files (plain or .gz), or None."""
    for base in _data_roots(root):
        for folder in (base, base / "fashion-mnist", base / "FashionMNIST" / "raw"):
            if all(_idx_file(folder, s) for pair in FASHION_FILES.values() for s in pair):
                return folder
    return None


def _read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_mnist(root: str, _size: int) -> tuple[ImageSet, ImageSet, int]:
    folder = find_fashion_mnist(root)
    if folder is None:
        folder = _download_fashion_mnist(root)
    sets = []
    for split in ("train", "test"):
        img_stem, lbl_stem = FASHION_FILES[split]
        images = _read_idx(_idx_file(folder, img_stem))  # type: ignore[arg-type]
        labels = _read_idx(_idx_file(folder, lbl_stem))  # type: ignore[arg-type]
        sets.append(ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))))
    return sets[0], sets[1], 10


def _download_fashion_mnist(root: str) -> Path:
    target = Path(root) if root != "auto" else _user_data_dir()
    searched = ", ".join(str(p) for p in _data_roots(root))
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(target), train=True, download=True)
        FashionMNIST(str(target), train=False, download=True)
    except Exception as exc:  # offline machines end here
        raise SpecError(
            [
                f"data.root: Fashion-MNIST not found in {searched} and the download failed "
                f"({type(exc).__name__}); install it with `apt-get install dataset-fashion-mnist` "
                "(Debian), or put the four idx files in a folder and set data.root or OFASEARCH_DATA"
            ]
        ) from None
    found = find_fashion_mnist(str(target))
    assert found is not None
    return found


def _digits(_root: str, _size: int) -> tuple[ImageSet, ImageSet, int]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = len(labels) // 5  # scikit-learn's digits has no test split: hold out 20 %
    all_set = ImageSet(images, labels)
    return all_set.take(order[n_test:]), all_set.take(order[:n_test]), 10


def _cifar(name: str, root: str, _size: int) -> tuple[ImageSet, ImageSet, int]:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls, classes = (CIFAR10, 10) if name == "cifar10" else (CIFAR100, 100)
    roots = _data_roots(root)
    for base in roots:
        try:
            train, test = cls(str(base), train=True), cls(str(base), train=False)
        except RuntimeError:
            continue
        return _from_hwc(train.data, train.targets), _from_hwc(test.data, test.targets), classes
    raise SpecError(
        [
            f"data.root: {name} not found in {', '.join(map(str, roots))}; download it once "
            f"(torchvision.datasets.{cls.__name__}(root, download=True)) and set data.root"
        ]
    )


def _from_hwc(images: np.ndarray, labels: list[int]) -> ImageSet:
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels, dtype=torch.int64))


def _imagefolder(root: str, size: int) -> tuple[ImageSet, ImageSet, int]:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor, resize

    base = Path(root)
    if root == "auto" or not (base / "train").is_dir():
        raise SpecError([f"data.root: imagefolder needs a folder with train/ and val/ (or test/), got {root!r}"])
    test_dir = base / "val" if (base / "val").is_dir() else base / "test"
    if not test_dir.is_dir():
        raise SpecError([f"data.root: {root!r} has train/ but neither val/ nor test/"])

    def load(folder: Path) -> tuple[ImageSet, int]:
        ds = ImageFolder(str(folder))
        images = [
            resize(pil_to_tensor(ds.loader(p).convert("RGB")), [size, size], antialias=True) for p, _ in ds.samples
        ]
        return ImageSet(torch.stack(images), torch.tensor(ds.targets, dtype=torch.int64)), len(ds.classes)

    (train, classes), (test, _) = load(base / "train"), load(test_dir)
    return train, test, classes


Loader = Callable[[str, int], tuple[ImageSet, ImageSet, int]]
"""(data.root, image size) -> (train, test, number of classes); sizes other than the dataset's
own are resized later by :func:`load_splits` (only imagefolder uses the size while reading)."""

LOADERS: dict[str, Loader] = {
    "fashion-mnist": _fashion_mnist,
    "digits": _digits,
    "cifar10": functools.partial(_cifar, "cifar10"),
    "cifar100": functools.partial(_cifar, "cifar100"),
    "imagefolder": _imagefolder,
}
"""One loader per name of ``ofasearch.config.registry.DATASETS`` (which holds each dataset's
default image size and whether flips keep its labels)."""


# ------------------------------------------------------------------------------ splits


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def load_splits(spec: DataSpec) -> Splits:
    """Load the dataset, resize once to ``image_size`` and split a fixed validation set off train."""
    info = get_dataset(spec.dataset)
    size = spec.image_size or info.default_image_size
    train, test, classes = LOADERS[spec.dataset](spec.root, size)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    if spec.val_size is not None:  # validation first, then the training subset from the rest
        if spec.val_size >= len(order):
            raise SpecError([f"data.val_size: {spec.val_size} leaves no training images ({len(order)} in train)"])
        val_index, train_index = order[: spec.val_size], order[spec.val_size :][: spec.train_subset]
    else:
        if spec.train_subset is not None:
            order = order[: spec.train_subset]
        fraction = spec.val_fraction if spec.val_fraction is not None else DEFAULT_VAL_FRACTION
        n_val = max(1, int(round(len(order) * fraction)))
        if len(order) - n_val < 1:
            raise SpecError([f"data.val_fraction: {fraction} leaves no training images"])
        val_index, train_index = order[:n_val], order[n_val:]
    train_set, val_set = train.take(train_index), train.take(val_index)
    resized = [ImageSet(_resize(s.images, size), s.labels) for s in (train_set, val_set, test)]
    return Splits(
        *resized,
        num_classes=classes,
        in_chans=int(train.images.shape[1]),
        image_size=size,
        flip=info.flip,
        augment=spec.augment,
    )
