"""The data fingerprint: an image folder's files decide its teacher and logit cache, its place
on disk does not; a registry dataset is identified by its name and split settings."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from ofasearch.config import DataSpec, ModelSpec
from ofasearch.data import data_fingerprint, data_identity, load_splits
from ofasearch.training.teacher import prepare_teacher, teacher_key
from tests.data.test_imagefolder import COUNTS, _write, fashion  # noqa: F401 (a fixture)


def _spec(root) -> DataSpec:
    return DataSpec(dataset="imagefolder", root=str(root), image_size=16)


def _repaint(root) -> None:
    """Every image of ``root`` inverted: the same layout, names and sizes class by class, other pixels."""
    for path in sorted(root.rglob("*.png")):
        with Image.open(path) as img:
            pixels = np.asarray(img)
        Image.fromarray(255 - pixels).save(path)


def test_a_copy_elsewhere_is_the_same_data_and_a_changed_image_is_not(tmp_path, fashion):  # noqa: F811
    here = _write(tmp_path / "here", fashion, COUNTS)
    there = tmp_path / "there"
    shutil.copytree(here, there)  # copies keep modification times, as rsync -a does
    first, copy = data_fingerprint(_spec(here)), data_fingerprint(_spec(there))
    assert first is not None
    assert first == copy
    assert first.files == 3 * sum(COUNTS.values())
    assert data_identity(_spec(here)) == data_identity(_spec(there)), "the root is not part of the identity"

    changed = sorted(there.rglob("*.png"))[5]
    with Image.open(changed) as img:
        pixels = np.asarray(img)
    Image.fromarray(255 - pixels).save(changed)
    after = data_fingerprint(_spec(there))
    assert after is not None
    assert after.digest != first.digest
    assert data_identity(_spec(here)) != data_identity(_spec(there))
    assert after.describe().startswith(f"{first.files} image files, ")

    (there / "train" / "boot" / "extra.png").write_bytes(changed.read_bytes())
    assert data_fingerprint(_spec(there)).files == first.files + 1


def test_a_registry_dataset_has_no_file_digest():
    fashion_spec = DataSpec(dataset="fashion-mnist", train_subset=100)
    assert data_fingerprint(fashion_spec) is None
    assert data_identity(fashion_spec) == fashion_spec.model_dump(exclude={"root"}), "keys of stored teachers kept"


def test_two_folders_of_the_same_layout_and_other_images_get_different_teachers(tmp_path, fashion):  # noqa: F811
    """Trained once per folder: the second is not handed the first one's teacher."""
    teacher = ModelSpec(model="resnet10t", checkpoint="auto", recipe={"epochs": 1, "batch_size": 64})
    first = _write(tmp_path / "first", fashion, COUNTS)
    second = tmp_path / "second"
    shutil.copytree(first, second)
    _repaint(second)
    assert teacher_key(teacher, _spec(first)) != teacher_key(teacher, _spec(second))
    infos = [prepare_teacher(teacher, _spec(root), load_splits(_spec(root))) for root in (first, second)]
    assert all(info.trained_now for info in infos), "each folder trains its own teacher"
    assert infos[0].checkpoint != infos[1].checkpoint
    assert infos[0].sha256 != infos[1].sha256
    again = prepare_teacher(teacher, _spec(first), load_splits(_spec(first)))
    assert again.checkpoint == infos[0].checkpoint, "the same folder reuses its own"
    assert not again.trained_now, "the same folder reuses its own"
