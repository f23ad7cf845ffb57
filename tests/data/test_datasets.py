import numpy as np
import pytest
import torch

from ofasearch.config import DataSpec
from ofasearch.data import augment, find_fashion_mnist, load_splits


def test_digits_split_is_fixed_and_disjoint():
    a = load_splits(DataSpec(dataset="digits", image_size=16))
    b = load_splits(DataSpec(dataset="digits", image_size=16))
    assert torch.equal(a.val.images, b.val.images)
    assert torch.equal(a.train.labels, b.train.labels)
    assert (len(a.train), len(a.val), len(a.test)) == (1294, 144, 359)
    # stored at the native 8 px, upsampled per batch to the 16-px input (ofasearch.data.pipeline)
    assert a.train.images.shape[1:] == (1, 8, 8)
    assert a.input_size == (1, 16, 16)
    assert a.train.images.dtype == torch.uint8
    train_rows = {bytes(x.numpy()) for x in a.train.images}
    assert not any(bytes(x.numpy()) in train_rows for x in a.val.images[:50])
    assert a.num_classes == 10
    assert not a.flip


def test_train_subset_and_val_fraction():
    s = load_splits(DataSpec(dataset="digits", train_subset=200, val_fraction=0.25))
    assert (len(s.train), len(s.val)) == (150, 50)


def test_val_size_is_independent_of_train_subset():
    small = load_splits(DataSpec(dataset="digits", train_subset=200, val_size=300))
    large = load_splits(DataSpec(dataset="digits", train_subset=900, val_size=300))
    assert (len(small.train), len(small.val), len(large.train)) == (200, 300, 900)
    assert torch.equal(small.val.images, large.val.images), "the same validation images whatever the subset"
    train_rows = {bytes(x.numpy()) for x in large.train.images}
    assert not any(bytes(x.numpy()) in train_rows for x in large.val.images[:50])


def test_val_size_errors_name_the_field():
    from ofasearch.config import parse_spec
    from ofasearch.errors import SpecError

    with pytest.raises(SpecError, match="data.val_size: 1797 leaves no training images"):
        load_splits(DataSpec(dataset="digits", val_size=1797))
    pairs = [{"teacher": {"model": "resnet10t"}, "student": {"model": "resnet10t"}}]
    with pytest.raises(SpecError, match=r"data: give val_size \(100\) or val_fraction \(0.2\), not both"):
        parse_spec({"data": {"dataset": "digits", "val_size": 100, "val_fraction": 0.2}, "pairs": pairs})


def test_fashion_mnist_from_the_debian_package():
    assert find_fashion_mnist() is not None, "install it: apt-get install dataset-fashion-mnist (make data)"
    s = load_splits(DataSpec(dataset="fashion-mnist", val_fraction=0.1))
    assert (len(s.train), len(s.val), len(s.test)) == (54000, 6000, 10000)
    assert s.input_size == (1, 28, 28)
    assert s.flip
    larger = load_splits(DataSpec(dataset="fashion-mnist", image_size=32, train_subset=100))
    assert larger.train.images.shape[1:] == (1, 28, 28), "never upsampled in memory"
    assert larger.input_size == (1, 32, 32)
    smaller = load_splits(DataSpec(dataset="fashion-mnist", image_size=16, train_subset=100))
    assert smaller.train.images.shape[1:] == (1, 16, 16), "downsized once at load"


def test_augmentation_replays_per_sample_and_view():
    images = torch.randint(0, 256, (20, 1, 16, 16), dtype=torch.uint8)
    index = torch.arange(20)
    a = augment(images, index, seed=1, view=3, flip=True)
    b = augment(images[5:9], index[5:9], seed=1, view=3, flip=True)
    assert torch.equal(a[5:9], b), "a sample's view must not depend on its batch"
    c = augment(images, index, seed=1, view=4, flip=True)
    assert not torch.equal(a, c)
    assert a.dtype == torch.float32
    assert 0.0 <= a.min()
    assert a.max() <= 1.0


def test_augmentation_is_a_crop_of_the_padded_image():
    images = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8)
    out = augment(images, torch.tensor([0]), seed=0, view=0, flip=False, pad=1)
    values = set((out * 255).round().long().flatten().tolist()) - {0}
    assert values <= set(range(64))
    assert len(values) >= 40


def test_missing_cifar_root_is_a_clear_error(tmp_path):
    from ofasearch import SpecError

    with pytest.raises(SpecError, match="cifar10 not found"):
        load_splits(DataSpec(dataset="cifar10", root=str(tmp_path)))


def test_a_loader_for_every_registered_dataset_and_no_other():
    from ofasearch.config.registry import DATASETS
    from ofasearch.data.datasets import LOADERS

    assert set(LOADERS) == set(DATASETS)


def test_paper_protocol_trains_on_all_and_scores_on_test():
    spec = DataSpec(dataset="digits", val_fraction=0)
    s = load_splits(spec)
    assert (len(s.train), len(s.val), len(s.test)) == (1438, 359, 359), "all of train trains"
    assert torch.equal(s.val.labels, s.test.labels), "scored on test"
    assert torch.equal(s.val.images, s.test.images), "scored on test"
    assert spec.paper_protocol
    assert spec.protocol.startswith("paper: val_acc is the TEST accuracy")
    held_out = DataSpec(dataset="digits")
    assert not held_out.paper_protocol
    assert "held-out" in held_out.protocol


def test_digits_are_scikit_learns_without_importing_it():
    """The digits read from scikit-learn's shipped CSV are load_digits' pixels and labels, and a
    process that loads them never imports scikit-learn (seconds per trial worker)."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from ofasearch.data.datasets import _digits_arrays

    pixels, labels = _digits_arrays()
    bunch = load_digits()
    np.testing.assert_array_equal(pixels, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)
    probe = (
        "import sys; from ofasearch.config import DataSpec; from ofasearch.data import load_splits; "
        "load_splits(DataSpec(dataset='digits')); print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
