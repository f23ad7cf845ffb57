"""Datasets as uint8 images, a fixed train/val/test split, seeded augmentation.

The built-in datasets are small enough to live in RAM as one tensor; ``imagefolder`` is read
lazily (see :mod:`ofasearch.data.imagefolder`: files listed up front, decoded per batch). Both
index the same way, which keeps the training loop free of data-loader processes (2-core
machines, Ray workers) and makes every augmentation replayable: the crop/flip of sample i in
view v is a pure function of (seed, v, i).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ofasearch.config import DataSpec
from ofasearch.config.registry import get_dataset
from ofasearch.data.imagefolder import ImageFiles, read_imagefolder
from ofasearch.errors import SpecError

__all__ = ["LOADERS", "ImageSet", "Loader", "Source", "Splits", "find_fashion_mnist", "load_splits", "resize_images"]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_VAL_FRACTION = 0.1  # of train (after train_subset), when neither val_size nor val_fraction is given
SPLIT_SEED = 0  # the val split never depends on the run's seed: all runs score on the same images
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W) and int64 labels (N,). ``images`` is a tensor in memory or
    :class:`ImageFiles` (decoded when indexed); ``images[idx]`` is a uint8 tensor either way."""

    images: torch.Tensor | ImageFiles
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> ImageSet:
        """The subset ``index`` (lazy images stay lazy)."""
        images = self.images.take(index) if isinstance(self.images, ImageFiles) else self.images[index]
        return ImageSet(images, self.labels[index])


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
    # the dataset's per-channel mean/std in [0, 1] (data registry): augment.normalize: dataset
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    origin: dict[str, str] | None = None  # where each split comes from (validate prints it)
    resize: str = "squash"

    def describe(self, dataset: str, *, rrc: bool = False) -> str:
        """One line for ``validate``: classes, size, and each split's count and source (``rrc``:
        some run crops with ``augment.crop: rrc``, which an image folder serves from the originals)."""
        origin = self.origin or {}
        parts = [
            f"{name} {len(part)}" + (f" ({origin[name]})" if name in origin else "")
            for name, part in (("train", self.train), ("val", self.val), ("test", self.test))
        ]
        lazy = "; decoded per batch" if isinstance(self.train.images, ImageFiles) else ""
        size = f"{self.image_size}x{self.image_size} px (resize: {self.resize})"
        if lazy and rrc:
            cut = f"crop rrc: cut from each original image, resize: {self.resize} for crop pad"
            size = f"{self.image_size}x{self.image_size} px ({cut})"
        return (
            f"data: {dataset}, {self.num_classes} classes, {size}, {self.in_chans} channel(s); {', '.join(parts)}{lazy}"
        )

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


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (N, 8, 8) pixels 0..16 and labels, read from the CSV the package
    ships without importing scikit-learn: its import costs seconds, paid by every process that
    loads the data (the driver and each trial's worker), the read 30 ms."""
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is None or not csv.is_file():  # a scikit-learn that keeps its data elsewhere
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(csv, "rt") as rows:
        table = np.loadtxt(rows, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def _digits(_root: str, _size: int) -> tuple[ImageSet, ImageSet, int]:
    pixels, target = _digits_arrays()
    images = torch.from_numpy((pixels * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(target.astype(np.int64))
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


@dataclass
class Source:
    """What a loader found: train and test, the validation split when the data names one
    (None: held out of train), the number of classes and where each split came from."""

    train: ImageSet
    test: ImageSet
    classes: int
    val: ImageSet | None = None
    origin: dict[str, str] | None = None


def _in_memory(load: Callable[[str, int], tuple[ImageSet, ImageSet, int]]) -> Callable[[DataSpec, int], Source]:
    """A loader of a built-in dataset (train and test splits in RAM) as a :data:`Loader`."""

    def loader(spec: DataSpec, size: int) -> Source:
        train, test, classes = load(spec.root, size)
        return Source(train, test, classes, origin={"train": "train", "val": f"held out of train, seed {SPLIT_SEED}"})

    return loader


def _imagefolder(spec: DataSpec, size: int) -> Source:
    found = read_imagefolder(spec.root, size, spec.resize, SPLIT_SEED)
    val = ImageSet(*found.val) if found.val is not None else None
    return Source(ImageSet(*found.train), ImageSet(*found.test), len(found.classes), val, found.origin)


Loader = Callable[[DataSpec, int], Source]
"""(data spec, image size) -> :class:`Source`; sizes other than the dataset's own are resized
later by :func:`load_splits` (imagefolder decodes at that size, per batch)."""

LOADERS: dict[str, Loader] = {
    "fashion-mnist": _in_memory(_fashion_mnist),
    "digits": _in_memory(_digits),
    "cifar10": _in_memory(functools.partial(_cifar, "cifar10")),
    "cifar100": _in_memory(functools.partial(_cifar, "cifar100")),
    "imagefolder": _imagefolder,
}
"""One loader per name of ``ofasearch.config.registry.DATASETS`` (which holds each dataset's
default image size and whether flips keep its labels)."""


# ------------------------------------------------------------------------------ splits


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images resized to ``size`` x ``size`` (bilinear, antialiased, rounded back to uint8);
    unchanged when they already have that size. Datasets are stored at most at their native size
    and upsampled per batch with this (``ofasearch.data.pipeline``), so a 224-px CIFAR run keeps
    32-px images in memory."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images  # lazy images are decoded at their size already
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def load_splits(spec: DataSpec) -> Splits:
    """Load the dataset, resize once to ``image_size`` and split a fixed validation set off train."""
    info = get_dataset(spec.dataset)
    size = spec.image_size or info.default_image_size
    source = LOADERS[spec.dataset](spec, size)
    train, test, classes = source.train, source.test, source.classes
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    if source.val is not None:  # the data names its validation split: use it as named
        given = [f"data.{k}" for k in ("val_size", "val_fraction") if getattr(spec, k) is not None]
        if given:
            raise SpecError(
                [f"{given[0]}: the data has its own validation split ({(source.origin or {}).get('val')}); remove it"]
            )
        val_index, train_index = None, order[: spec.train_subset]
    elif spec.val_size is not None:  # validation first, then the training subset from the rest
        if spec.val_size >= len(order):
            raise SpecError([f"data.val_size: {spec.val_size} leaves no training images ({len(order)} in train)"])
        val_index, train_index = order[: spec.val_size], order[spec.val_size :][: spec.train_subset]
    else:
        if spec.train_subset is not None:
            order = order[: spec.train_subset]
        fraction = spec.val_fraction if spec.val_fraction is not None else DEFAULT_VAL_FRACTION
        n_val = 0 if spec.paper_protocol else max(1, int(round(len(order) * fraction)))
        if len(order) - n_val < 1:
            raise SpecError([f"data.val_fraction: {fraction} leaves no training images"])
        val_index, train_index = order[:n_val], order[n_val:]
    # the paper's protocol (val_fraction 0): every training image trains, the test split scores
    train_set = train.take(train_index)
    origin = dict(source.origin or {})
    if spec.paper_protocol:
        val_set = test
        origin["val"] = "the test split (val_fraction 0: the paper's protocol)"
    else:
        val_set = source.val if val_index is None else train.take(val_index)
    # stored at most at the native size: a larger image_size is reached per batch by the
    # pipeline (a 224-px CIFAR run keeps its 32-px images, 49x less memory)
    stored = min(size, int(train.images.shape[-1]))
    resized = [ImageSet(resize_images(s.images, stored), s.labels) for s in (train_set, val_set, test)]
    return Splits(
        *resized,
        num_classes=classes,
        in_chans=int(train.images.shape[1]),
        image_size=size,
        flip=info.flip,
        augment=spec.augment,
        origin=origin,
        resize=spec.resize or "squash",
        mean=info.mean,
        std=info.std,
    )
