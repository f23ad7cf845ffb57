"""optim.data_on_device: the train set and logit cache moved to the device give the host path's
batches and losses exactly; what auto and on choose, and why."""

import logging

import pytest
import torch

from ofasearch.config import AugmentSpec, DataSpec, parse_config
from ofasearch.data import Pipeline, load_splits
from ofasearch.distill import OFADistiller
from ofasearch.models import build_model
from ofasearch.training.logit_cache import open_or_build
from ofasearch.training.loop import fit
from ofasearch.training.resident import ResidentTrainSet, resident_bytes, resident_choice

CPU = torch.device("cpu")
HOST_ONLY = "timm's PIL transforms (colour jitter, AugMix, blur) run on the host"


@pytest.fixture(scope="module")
def splits():
    return load_splits(DataSpec(dataset="digits", image_size=16, train_subset=96, val_size=40))


@pytest.fixture(scope="module")
def cache(tmp_path_factory, splits):
    torch.manual_seed(0)
    teacher = build_model("resnet10t", num_classes=10, in_chans=1, image_size=16).eval()
    return open_or_build(teacher, splits, tmp_path_factory.mktemp("cache") / "c", seed=0, views=2)


def _config(data_on_device: str):
    return parse_config(
        {
            "data": {"dataset": "digits", "image_size": 16, "train_subset": 96, "val_size": 40},
            "pairs": [{"teacher": {"model": "resnet10t"}, "student": {"model": "resnet10t"}}],
            "distill": {"method": "ofa", "stages": [3, 4]},
            "optim": {"epochs": 2, "batch_size": 16, "warmup_epochs": 0, "data_on_device": data_on_device},
        }
    )


def _fit(splits, cache, data_on_device: str):
    config = _config(data_on_device)
    torch.manual_seed(0)
    teacher = build_model("resnet10t", **splits.model_args).eval()
    distiller = OFADistiller.from_config(config, teacher, **splits.model_args)
    return fit(distiller, splits, config.optim, seed=0, device=CPU, evaluate_test=False, logit_cache=cache)


def test_a_resident_batch_is_the_host_batch(splits, cache):
    pipeline = Pipeline(AugmentSpec(), splits)
    resident = ResidentTrainSet(splits.train, pipeline, cache, CPU)
    idx = torch.tensor([5, 0, 77, 31, 5])
    for view in (0, 1):
        images, labels, cached = resident.batch(idx, seed=3, view=view)
        host_images, host_labels = pipeline.train_batch(splits.train, idx, seed=3, view=view)
        assert torch.equal(images, host_images)
        assert torch.equal(labels, host_labels)
        assert torch.equal(cached, cache.lookup(idx, view))
    assert not torch.equal(resident.batch(idx, seed=3, view=0)[0], resident.batch(idx, seed=3, view=1)[0])


@pytest.mark.parametrize(
    "augment",
    [
        {"crop": "rrc"},
        {"crop": "rrc", "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25, "mixup": 0.8, "cutmix": 1.0},
    ],
    ids=["crop-and-flip", "randaugment-erasing-mixing"],
)
def test_rrc_views_move_with_the_stored_images(splits, cache, augment):
    """The paper's views (RandomResizedCrop + flip; RandAugment, random erasing and Mixup/CutMix)
    are timm's draws rendered by tensor ops: the resident set keeps the native 8-px images and
    makes the same views from them there."""
    pipeline = Pipeline(AugmentSpec(**augment), splits)
    assert pipeline.tensor_views
    assert pipeline.batched
    choice = resident_choice("on", pipeline, splits.train, cache, CPU)
    mb = resident_bytes(splits.train, 0, cache) / 2**20
    assert choice.resident
    assert choice.reason == f"optim.data_on_device: on ({mb:.1f} MB on cpu)"
    resident = ResidentTrainSet(splits.train, pipeline, cache, CPU)
    assert resident.train.images.shape[-1] == 8, "stored at the native size: crops come from it"
    idx = torch.tensor([5, 0, 77, 31])
    images, labels, _cached = resident.batch(idx, seed=3, view=1)
    host_images, host_labels = pipeline.train_batch(splits.train, idx, seed=3, view=1)
    assert images.shape == (4, 1, 16, 16)
    assert torch.equal(images, host_images)
    assert torch.equal(labels, host_labels)
    assert labels.shape == ((4, 10) if "mixup" in augment else (4,))


def test_training_on_the_resident_set_computes_what_the_host_path_does(splits, cache, caplog):
    with caplog.at_level(logging.INFO, logger="ofasearch.training.loop"):
        on = _fit(splits, cache, "on")
    off = _fit(splits, cache, "off")
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("optim.data_on_device")]
    mb = resident_bytes(splits.train, 16, cache) / 2**20
    assert said == [f"optim.data_on_device: on ({mb:.1f} MB on cpu)"]
    assert [(h.train_loss, h.parts, h.val_acc) for h in on.history] == [
        (h.train_loss, h.parts, h.val_acc) for h in off.history
    ]


@pytest.mark.parametrize(
    ("augment", "reason"),
    [
        ({"crop": "rrc", "color_jitter": 0.4}, HOST_ONLY),
        ({"crop": "rrc", "auto_augment": "augmix-m5-w4-d2"}, HOST_ONLY),
    ],
)
def test_per_sample_views_stay_on_the_host(splits, augment, reason):
    choice = resident_choice("on", Pipeline(AugmentSpec(**augment), splits), splits.train, None, CPU)
    assert not choice.resident
    assert choice.reason == f"optim.data_on_device: on -> off ({reason})"


def test_auto_keeps_the_host_path_on_a_cpu_and_off_is_off(splits, cache):
    pipeline = Pipeline(AugmentSpec(), splits)
    auto = resident_choice("auto", pipeline, splits.train, cache, CPU)
    assert not auto.resident
    assert auto.reason == "optim.data_on_device: auto -> off (on cpu the host path is the device path)"
    assert resident_choice("off", pipeline, splits.train, cache, CPU).reason == "optim.data_on_device: off"


def test_the_size_counts_images_labels_and_every_cache_view(splits, cache):
    n = len(splits.train)
    assert resident_bytes(splits.train, 16, cache) == n * 1 * 16 * 16 + n * 8 + n * 2 * 10 * 2
    assert resident_bytes(splits.train, 32, None) == n * 32 * 32 + n * 8
    assert resident_bytes(splits.train, 0, None) == n * 8 * 8 + n * 8, "0: as stored"
