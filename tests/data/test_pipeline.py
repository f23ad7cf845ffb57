"""Training views are replayable per (seed, view, sample) under every recipe, mixup included."""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import center_crop, resize

from ofasearch.config import AugmentSpec, DataSpec
from ofasearch.config.registry import recipe_section
from ofasearch.data import Pipeline, augment, load_splits, resize_images
from ofasearch.data.imagefolder import decode_original


def recipe_augment(name: str) -> AugmentSpec:
    return AugmentSpec(**recipe_section(name, "augment"))


@pytest.fixture(scope="module")
def digits():
    """Digits are 8x8: stored at 8 px, upsampled per batch to the 16-px input."""
    return load_splits(DataSpec(dataset="digits", image_size=16, train_subset=200))


@pytest.fixture(scope="module")
def cifar_like():
    """RGB at 32 px from digits' labels (no CIFAR on this machine): 3 channels, 32-px input."""
    splits = load_splits(DataSpec(dataset="digits", image_size=32, train_subset=120))
    for part in (splits.train, splits.val, splits.test):
        g = torch.Generator().manual_seed(len(part))
        part.images = part.images.repeat(1, 3, 1, 1).int() + torch.randint(0, 60, (len(part), 3, 1, 1), generator=g)
        part.images = part.images.clamp(0, 255).to(torch.uint8)
    splits.in_chans, splits.mean, splits.std = 3, (0.5, 0.4, 0.3), (0.25, 0.25, 0.25)
    return splits


def test_stored_at_native_size_and_upsampled_per_batch(digits):
    assert digits.train.images.shape[-1] == 8
    assert digits.image_size == 16
    pipeline = Pipeline(AugmentSpec(), digits)
    idx = torch.tensor([3, 1, 4, 1, 5])
    # the default pipeline is today's: pad-crop + flip of the 16-px image
    expected = augment(resize_images(digits.train.images[idx], 16), idx, seed=2, view=1, flip=digits.flip)
    images, labels = pipeline.train_batch(digits.train, idx, seed=2, view=1)
    torch.testing.assert_close(images, expected, rtol=0, atol=0)
    assert torch.equal(labels, digits.train.labels[idx])
    torch.testing.assert_close(
        pipeline.eval_images(digits.val.images[:4]), resize_images(digits.val.images[:4], 16).float() / 255
    )


@pytest.mark.parametrize("recipe", ["paper-cnn", "paper-vit"])
def test_paper_views_depend_only_on_seed_view_and_sample(cifar_like, recipe):
    pipeline = Pipeline(recipe_augment(recipe), cifar_like)
    idx = torch.tensor([5, 17, 42, 99, 0, 64])
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    x, y = pipeline.train_batch(cifar_like.train, idx, seed=1, view=2)
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2]), "seeding per sample leaves the global RNGs alone"
    assert x.shape == (6, 3, 32, 32)
    assert x.dtype == torch.float32
    # the same samples in another batch, order and company: the same images and targets
    order = torch.tensor([3, 0, 5])
    x2, y2 = pipeline.train_batch(cifar_like.train, idx[order], seed=1, view=2)
    torch.testing.assert_close(x2, x[order], rtol=0, atol=0)
    torch.testing.assert_close(y2, y[order], rtol=0, atol=0)
    other, _ = pipeline.train_batch(cifar_like.train, idx, seed=1, view=3)
    assert not torch.allclose(other, x), "another view is another augmentation"
    if recipe == "paper-vit":
        assert y.shape == (6, 10), "mixed: soft labels"
        assert torch.allclose(y.sum(1), torch.ones(6)), "mixed: soft labels"
        assert (y.max(1).values < 1).all(), "label smoothing 0.1 inside timm's Mixup"
    else:
        assert torch.equal(y, cifar_like.train.labels[idx]), "paper-cnn: no mixing, labels stay"


def test_mixup_partners_are_one_cycle_per_view(cifar_like):
    pipeline = Pipeline(recipe_augment("paper-vit"), cifar_like)
    everyone = torch.arange(len(cifar_like.train))
    partners = pipeline.partners(everyone, seed=0, view=0)
    assert sorted(partners.tolist()) == everyone.tolist(), "each sample is the partner of exactly one"
    assert not (partners == everyone).any(), "never mixed with itself"
    assert not torch.equal(partners, pipeline.partners(everyone, seed=0, view=1)), "new partners each view"


def test_eval_is_resize_and_center_crop(cifar_like):
    pipeline = Pipeline(recipe_augment("paper-cnn"), cifar_like)
    out = pipeline.eval_images(cifar_like.val.images[:3])
    assert out.shape == (3, 3, 32, 32)
    assert 0 <= float(out.min())
    assert float(out.max()) <= 1
    torch.testing.assert_close(out, pipeline.eval_images(cifar_like.val.images[:3]), rtol=0, atol=0)


@pytest.fixture(scope="module")
def wide_folder(tmp_path_factory):
    """Class folders of 40x80 images whose value rises from the left edge to the right one
    (3 per column), so a crop says which columns of the original it holds."""
    root = tmp_path_factory.mktemp("wide")
    ramp = np.repeat(np.repeat((np.arange(80) * 3).astype(np.uint8)[None, :, None], 40, 0), 3, 2)
    for name in ("a", "b"):
        (root / name).mkdir()
        for i in range(6):
            Image.fromarray(ramp).save(root / name / f"{i}.png")
    return load_splits(DataSpec(dataset="imagefolder", root=str(root), image_size=16))


def test_folder_eval_is_resize_and_center_crop_of_the_original(wide_folder):
    pipeline = Pipeline(recipe_augment("paper-cnn"), wide_folder)
    assert pipeline.from_originals
    idx = torch.tensor([0, 1])
    out = pipeline.eval_batch(wide_folder.test, idx)
    original = decode_original(wide_folder.test.images.paths[0])
    assert tuple(original.shape) == (3, 40, 80), "decoded at its own size"
    # timm's eval: the shorter side to 16 / 0.875 = 18 px, then the middle 16x16
    expected = center_crop(resize(original, 18, antialias=True), [16, 16]).float() / 255
    torch.testing.assert_close(out[0], expected, atol=1 / 255, rtol=0)
    # the middle of a wide image: neither edge (a squashed image would span 0..237)
    assert float(out[0, 0, :, 0].mean()) * 255 > 50
    assert float(out[0, 0, :, -1].mean()) * 255 < 190


def test_folder_crops_come_from_the_original(wide_folder):
    pipeline = Pipeline(recipe_augment("paper-cnn"), wide_folder)
    idx = torch.arange(len(wide_folder.train))
    spans, lows, highs = [], [], []
    for view in range(6):
        x, _ = pipeline.train_batch(wide_folder.train, idx, seed=0, view=view)
        row = x[:, 0, 8, :] * 255  # one row of each view: the columns its crop spans
        spans += (row.max(1).values - row.min(1).values).tolist()
        lows += row.min(1).values.tolist()
        highs += row.max(1).values.tolist()
    # RandomResizedCrop's aspect ratio is at most 4:3, so a crop of a 2:1 original never spans
    # both edges (it would from an image squashed to 16x16 first)
    assert max(spans) < 0.75 * 237
    assert min(lows) < 60, "crops land all over the original"
    assert max(highs) > 177, "crops land all over the original"
    again, _ = pipeline.train_batch(wide_folder.train, idx[:3], seed=0, view=5)
    torch.testing.assert_close(again, x[:3], rtol=0, atol=0)


def test_crop_and_flip_views_are_timms_pil_views_within_a_level(cifar_like):
    """paper-cnn's views (RandomResizedCrop + flip) run timm's own objects on uint8 tensors: the
    same crop boxes, interpolations and flips as timm's PIL pipeline from the same seeds. Bilinear
    pixels agree within one uint8 level (rounding); bicubic ones differ at sharp edges (torch's
    cubic kernel has a = -0.75, PIL's -0.5). On these digit strokes, the worst case: under half a
    level on average, and few pixels more than one level apart."""
    settings = recipe_augment("paper-cnn")
    tensor = Pipeline(settings, cifar_like)
    assert tensor.tensor_views
    assert tensor.batched
    pil = Pipeline(settings, cifar_like)
    pil.use_pil_views()
    idx = torch.arange(40)
    a, _ = tensor.train_batch(cifar_like.train, idx, seed=4, view=2)
    b, _ = pil.train_batch(cifar_like.train, idx, seed=4, view=2)
    levels = (a - b).abs() * 255
    assert float(levels.mean()) < 0.5
    assert float((levels > 1.001).float().mean()) < 0.05
    vit = Pipeline(recipe_augment("paper-vit"), cifar_like)
    assert vit.tensor_views, "RandAugment, erasing and mixing are tensor views too"
    assert vit.batched


def test_the_log_line_says_what_the_views_are_and_where_they_are_made(cifar_like):
    """Colour jitter is left out under RandAugment, as timm's create_transform leaves it out."""
    vit = Pipeline(recipe_augment("paper-vit"), cifar_like).describe()
    assert vit == (
        "training views: crop rrc, auto_augment rand-m9-mstd0.5-inc1, re_prob 0.25, mixup 0.8, cutmix 1.0, "
        "label_smoothing 0.1 (pixels made in batch on the training device)"
    )
    jitter = Pipeline(AugmentSpec(crop="rrc", color_jitter=0.4), cifar_like).describe()
    assert jitter == "training views: crop rrc, color_jitter 0.4 (timm's PIL pipeline per sample on the host)"
