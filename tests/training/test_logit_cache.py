"""The teacher-logit cache: equals the live teacher on the same views, and trains as well."""

import json

import pytest
import torch
import yaml

from ofasearch.cli import main
from ofasearch.config import DataSpec
from ofasearch.data import augment, load_splits
from ofasearch.models import build_model, normalization
from ofasearch.training.logit_cache import cache_views, open_or_build
from tests.logcapture import log_lines
from tests.specs import CONFIG


@pytest.fixture(scope="module")
def splits():
    return load_splits(DataSpec(dataset="digits", image_size=16, train_subset=400))


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return build_model("resnet10t", num_classes=10, in_chans=1, image_size=16).eval()


def test_cached_logits_equal_the_live_teacher_on_the_same_view(tmp_path, splits, teacher):
    cache = open_or_build(teacher, splits, tmp_path / "c", seed=3, views=3)
    assert (cache.num_samples, cache.views, cache.num_classes) == (len(splits.train), 3, 10)
    assert cache.size_bytes() == len(splits.train) * 3 * 10 * 2, "float16 (N, V, C)"
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization(teacher, 1))
    idx = torch.tensor([0, 7, 123, len(splits.train) - 1])
    for epoch in (0, 1, 2, 4):
        images = augment(splits.train.images[idx], idx, seed=3, view=epoch % 3, flip=splits.flip)
        with torch.no_grad():
            live = teacher((images - mean) / std)
        torch.testing.assert_close(cache.lookup(idx, epoch), live, atol=2e-2, rtol=1e-3)
    other = cache.lookup(idx, 1)
    assert not torch.allclose(cache.lookup(idx, 0), other), "views differ"


def test_cache_is_reused_not_rebuilt(tmp_path, splits, teacher):
    with log_lines() as messages:
        first = open_or_build(teacher, splits, tmp_path / "c", seed=0, views=2)
        second = open_or_build(teacher, splits, tmp_path / "c", seed=0, views=2)
    assert second.build_seconds == first.build_seconds and sum("building" in m for m in messages) == 1


def test_default_views_follow_the_epochs():
    assert cache_views(6, None) == 6 and cache_views(300, None) == 32 and cache_views(6, 4) == 4


def _train(tmp_path, name, cache, seed):
    data = {**CONFIG, "seed": seed, "distill": {**CONFIG["distill"], "teacher_cache": cache}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["train", str(path), "-o", str(tmp_path / name), "--no-progress"]) == 0
    return json.loads((tmp_path / name / "metrics.json").read_text())


def test_cached_run_matches_the_live_teacher_run(tmp_path):
    """Same views, same seed: the only difference is fp16 rounding of the teacher's logits, so the
    accuracies agree within a few validation images (144 images: 0.035 is 5 images)."""
    for seed in (0, 1):
        cached = _train(tmp_path, f"cached{seed}", "on", seed)
        live = _train(tmp_path, f"live{seed}", "off", seed)
        assert cached["teacher_cache"] and not live["teacher_cache"]
        assert abs(cached["val_acc"] - live["val_acc"]) <= 0.035, (seed, cached["val_acc"], live["val_acc"])
        assert cached["val_acc"] > 0.3, "learns: chance is 0.1"
