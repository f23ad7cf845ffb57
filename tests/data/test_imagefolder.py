"""imagefolder: folders of PNGs written by the test from Fashion-MNIST, read lazily, split as
named (train/val/test, validation/, flat class folders), resized by an explicit policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ofasearch import SpecError
from ofasearch.cli import main
from ofasearch.config import DataSpec
from ofasearch.data import load_splits
from ofasearch.data.datasets import FASHION_FILES, _idx_file, _read_idx, find_fashion_mnist
from ofasearch.data.imagefolder import ImageFiles, decode

CLASSES = ("boot", "shirt", "trouser")  # Fashion-MNIST labels 9, 6, 1
LABELS = (9, 6, 1)
COUNTS = {"train": 30, "val": 8, "test": 6}


@pytest.fixture(scope="module")
def fashion() -> tuple[np.ndarray, np.ndarray]:
    return fashion_arrays()


def fashion_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's test images and labels (the test is skipped without the Debian package)."""
    folder = find_fashion_mnist()
    if folder is None:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    images_stem, labels_stem = FASHION_FILES["test"]
    return _read_idx(_idx_file(folder, images_stem)), _read_idx(_idx_file(folder, labels_stem))


def _write(root: Path, fashion, layout: dict[str, int]) -> Path:
    """``layout``: split folder ('' for flat class folders) -> images per class, as PNG files."""
    images, labels = fashion
    used = 0
    for split, count in layout.items():
        for name, label in zip(CLASSES, LABELS, strict=True):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(np.flatnonzero(labels == label)[used : used + count]):
                Image.fromarray(images[i]).save(folder / f"{k:03d}.png")
        used += count
    return root


def test_train_val_test_are_used_as_named_and_read_lazily(tmp_path, fashion):
    root = _write(tmp_path / "named", fashion, COUNTS)
    splits = load_splits(DataSpec(dataset="imagefolder", root=str(root), image_size=16))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (90, 24, 18)
    assert splits.origin == {"train": "train/", "val": "val/", "test": "test/"}
    assert isinstance(splits.train.images, ImageFiles), "nothing decoded up front"
    assert all(Path(p).parent.parent.name == "val" for p in splits.val.images.paths)
    batch = splits.train.images[torch.tensor([0, 45, 89])]
    assert batch.dtype == torch.uint8
    assert batch.shape == (3, 3, 16, 16)
    assert splits.in_chans == 3
    assert torch.equal(batch[1], decode(splits.train.images.paths[45], 16, "squash"))
    assert sorted(splits.train.labels.tolist()) == [0] * 30 + [1] * 30 + [2] * 30
    assert splits.num_classes == 3
    labels = {Path(p).parent.name: int(y) for p, y in zip(splits.train.images.paths, splits.train.labels, strict=True)}
    assert labels == {"boot": 0, "shirt": 1, "trouser": 2}, "classes are the sorted class folder names"
    with pytest.raises(SpecError) as caught:
        load_splits(DataSpec(dataset="imagefolder", root=str(root), val_fraction=0.2))
    assert caught.value.problems == ["data.val_fraction: the data has its own validation split (val/); remove it"]
    subset = load_splits(DataSpec(dataset="imagefolder", root=str(root), image_size=16, train_subset=40))
    assert (len(subset.train), len(subset.val)) == (40, 24)


def test_validation_without_test_holds_the_test_split_out_of_train(tmp_path, fashion):
    root = _write(tmp_path / "validation", fashion, {"train": 30, "validation": 8})
    a = load_splits(DataSpec(dataset="imagefolder", root=str(root), image_size=16))
    b = load_splits(DataSpec(dataset="imagefolder", root=str(root), image_size=16))
    assert (len(a.train), len(a.val), len(a.test)) == (72, 24, 18)
    assert a.origin == {"train": "train/", "val": "validation/", "test": "held out of train/ (20%, seed 0)"}
    assert a.test.images.paths == b.test.images.paths, "the held-out test split is seeded"
    assert not set(a.test.images.paths) & set(a.train.images.paths)


def test_flat_class_folders_get_a_seeded_split(tmp_path, fashion):
    root = _write(tmp_path / "flat", fashion, {"": 40})
    splits = load_splits(DataSpec(dataset="imagefolder", root=str(root), image_size=16))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (86, 10, 24)
    paths = [set(s.images.paths) for s in (splits.train, splits.val, splits.test)]
    assert sum(map(len, paths)) == 120, "disjoint, nothing lost"
    assert len(set.union(*paths)) == 120, "disjoint, nothing lost"
    again = load_splits(DataSpec(dataset="imagefolder", root=str(root), image_size=16))
    assert again.test.images.paths == splits.test.images.paths


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"train": 2, "val": 2, "validation": 2}, "has both val/ and validation/; keep one"),
        ({"val": 2}, "has val/ but no train/"),
        ({"train": 2}, "has train/ but neither val/, validation/ nor test/"),
    ],
)
def test_unusable_layouts_are_one_line(tmp_path, fashion, layout, message):
    root = _write(tmp_path / "bad", fashion, layout)
    with pytest.raises(SpecError) as caught:
        load_splits(DataSpec(dataset="imagefolder", root=str(root)))
    assert caught.value.problems == [f"data.root: {str(root)!r} {message}"]


def test_resize_policies_on_a_wide_image(tmp_path):
    pixels = np.zeros((20, 40), dtype=np.uint8)
    pixels[:, :20], pixels[:, 20:] = 200, 100  # left half light, right half dark
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    squash, crop, pad = (decode(str(path), 16, p)[0] for p in ("squash", "center-crop", "pad"))
    assert squash[:, :7].float().mean() == pytest.approx(200, abs=2)
    assert squash[:, 9:].float().mean() < 102
    # center-crop: 16x32 after scaling, the middle 16 columns: still light | dark, and full height
    assert crop[:, :7].float().mean() == pytest.approx(200, abs=2)
    assert crop[:, 9:].float().mean() < 102
    # pad: 8x16 after scaling, black bands of 4 rows above and below, nothing stretched
    assert pad[:4].max() == 0
    assert pad[12:].max() == 0
    assert pad[4:12, :7].float().mean() == pytest.approx(200, abs=2)
    with pytest.raises(Exception, match="resize"):
        DataSpec(dataset="imagefolder", root=str(tmp_path), resize="stretch")


def test_validate_prints_the_split_counts(tmp_path, fashion, capsys):
    root = _write(tmp_path / "named", fashion, COUNTS)
    spec = {
        "data": {"dataset": "imagefolder", "root": str(root), "image_size": 16, "resize": "pad"},
        "pairs": [{"teacher": {"model": "resnet10t"}, "student": {"model": "resnet10t"}}],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "data: imagefolder, 3 classes, 16x16 px (resize: pad), 3 channel(s); train 90 (train/), val 24 (val/), "
        "test 18 (test/); decoded per batch"
    ) in out


@pytest.mark.slow  # trains a model
def test_a_student_trains_on_the_lazy_folder(tmp_path, fashion):
    """The training loop, its evaluation and metrics work on images decoded per batch."""
    import json

    root = _write(tmp_path / "named", fashion, COUNTS)
    config = {
        "name": "folder",
        "data": {"dataset": "imagefolder", "root": str(root), "image_size": 16},
        "pairs": [
            {
                "teacher": {"model": "resnet10t"},
                "student": {
                    "model": "vit_tiny_patch16_224",
                    "kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2},
                },
            }
        ],
        "distill": {"method": "none"},
        "optim": {"epochs": 2, "batch_size": 30, "warmup_epochs": 0, "lr": 2e-3},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["train", str(path), "-o", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert 0.0 <= metrics["test_acc"] <= 1.0
