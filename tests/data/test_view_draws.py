"""Recorded draws replay timm's training transform and Mixup: the same random stream, the same pixels."""

import random

import numpy as np
import pytest
import torch
from timm.data import Mixup, create_transform
from torchvision.transforms import functional as TF
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

from ofasearch.data.pipeline import _allow_zero_bit_posterize
from ofasearch.data.view_draws import ViewRecorder, draw_mix, finish_views, mix_batch

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.25, 0.25)


def transform(**kwargs):
    settings = dict(is_training=True, hflip=0.5, interpolation="random", mean=MEAN, std=STD, re_mode="pixel")
    tf = create_transform(32, **(settings | kwargs))
    _allow_zero_bit_posterize(tf)  # as the pipeline's: timm's 0-bit posterize is black, not Pillow's error
    return tf


@pytest.fixture(scope="module")
def photos():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(160, 3, 5, 7, generator=g)
    x = torch.nn.functional.interpolate(base, size=(36, 44), mode="bicubic", align_corners=False) * 255
    return (x + torch.randn(160, 3, 36, 44, generator=g) * 15).clamp(0, 255).to(torch.uint8)


def seed_all(key: int) -> None:
    random.seed(key)
    np.random.seed(key)
    torch.manual_seed(key)


@pytest.mark.parametrize(
    "policy",
    ["rand-m9-mstd0.5-inc1", "rand-m9-mstd0.5", "rand-m7-n3-mstd1.0-tweights", "original", "v0"],
    ids=["randaugment-paper", "randaugment-plain", "randaugment-weighted", "autoaugment-original", "autoaugment-v0"],
)
def test_recorded_views_are_timms_pil_views(photos, policy):
    """From the same seed, timm's PIL transform and the recorded draws rendered by tensor ops give
    the same views (float rounding apart): the crop is cut by PIL in both, so every op, both
    interpolations, the flips and the erased boxes with their noise are compared exactly."""
    tf = transform(auto_augment=policy, re_prob=0.5)
    recorder = ViewRecorder(tf, channels=3, size=32)
    expected, draws, crops = [], [], []
    for key, image in enumerate(photos):
        seed_all(key)
        expected.append(tf(to_pil_image(image)))
        seed_all(key)
        d = recorder.draw(image)
        draws.append(d)
        crops.append(pil_to_tensor(TF.resized_crop(to_pil_image(image), *d.crop, [32, 32], d.interpolation)))
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    ours = finish_views(torch.stack(crops), draws, fill=recorder.fill, mean=mean, std=std)
    torch.testing.assert_close(ours, torch.stack(expected) * std + mean, rtol=0, atol=1e-6)
    fired = {op.name for d in draws for op in d.ops}
    assert len(fired) >= 10, f"a broad set of ops was compared: {sorted(fired)}"
    assert any(d.erase for d in draws)
    assert {op.bicubic for d in draws for op in d.ops if op.name == "Rotate"} == {True, False}


def test_recording_consumes_the_stream_as_timm_does(photos):
    """After a sample's draws, Python's, NumPy's and torch's generators stand where timm's own
    transform leaves them, so nothing drawn later shifts."""
    tf = transform(auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)
    recorder = ViewRecorder(tf, channels=3, size=32)
    for key, image in enumerate(photos[:40]):
        seed_all(key)
        tf(to_pil_image(image))
        after_timm = (random.random(), np.random.rand(), torch.rand(1))
        seed_all(key)
        recorder.draw(image)
        assert (random.random(), np.random.rand(), torch.rand(1)) == after_timm


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        (dict(color_jitter=0.4), "ColorJitter"),
        (dict(auto_augment="augmix-m5-w4-d2"), "AugMixAugment"),
        (dict(auto_augment="rand-m9-t3a"), "GaussianBlur"),
    ],
)
def test_steps_the_recorder_cannot_replay_are_named(kwargs, named):
    with pytest.raises(ValueError, match=named):
        ViewRecorder(transform(**kwargs), channels=3, size=32)


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.8, 1.0), (0.8, 0.0), (0.0, 1.0)])
def test_batched_mixing_is_timms_elem_mixup_per_pair(photos, mixup, cutmix):
    """Per sample, timm's Mixup in elem mode on the pair (sample, partner) with NumPy seeded from
    the sample's key; the batch mixes all pairs at once with the same draws: identical images
    and soft targets."""
    mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, mode="elem", label_smoothing=0.1, num_classes=10)
    images = photos[:64, :, :32, :32].float() / 255
    partners = photos[64:128, :, :32, :32].float() / 255
    labels, partner_labels = torch.arange(64) % 10, (torch.arange(64) * 3 + 1) % 10
    expected_images, expected_targets, draws = [], [], []
    for i in range(64):
        np.random.seed(1000 + i)
        x, y = mix(torch.stack([images[i], partners[i]]), torch.stack([labels[i], partner_labels[i]]))
        expected_images.append(x[0])
        expected_targets.append(y[0])
        np.random.seed(1000 + i)
        draws.append(draw_mix(mix, 32, 32))
    off = 0.1 / 10
    targets = torch.full((64, 10), off).scatter_(1, labels[:, None], 1 - 0.1 + off)
    partner_targets = torch.full((64, 10), off).scatter_(1, partner_labels[:, None], 1 - 0.1 + off)
    mixed, soft = mix_batch(images, partners, draws, targets, partner_targets)
    torch.testing.assert_close(mixed, torch.stack(expected_images), rtol=0, atol=0)
    torch.testing.assert_close(soft, torch.stack(expected_targets), rtol=0, atol=1e-7)
    assert any(d.lam != 1.0 for d in draws)
