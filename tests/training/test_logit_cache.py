"""The teacher-logit cache: equals the live teacher on the same views, and trains as well."""

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ofasearch.cli import main
from ofasearch.config import AugmentSpec, DataSpec
from ofasearch.config.registry import recipe_section
from ofasearch.data import Pipeline, augment, load_splits, resize_images
from ofasearch.models import build_model, normalization
from ofasearch.training.logit_cache import LogitCache, cache_views, open_or_build
from ofasearch.utils.files import CorruptFileError, file_digest
from tests.helpers.logcapture import log_lines
from tests.helpers.specs import CONFIG


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
        stored = resize_images(splits.train.images[idx], splits.image_size)  # digits are stored at 8 px
        images = augment(stored, idx, seed=3, view=epoch % 3, flip=splits.flip)
        with torch.no_grad():
            live = teacher((images - mean) / std)
        torch.testing.assert_close(cache.lookup(idx, epoch), live, atol=2e-2, rtol=1e-3)
    other = cache.lookup(idx, 1)
    assert not torch.allclose(cache.lookup(idx, 0), other), "views differ"


def test_cache_is_reused_not_rebuilt(tmp_path, splits, teacher):
    with log_lines() as messages:
        first = open_or_build(teacher, splits, tmp_path / "c", seed=0, views=2)
        second = open_or_build(teacher, splits, tmp_path / "c", seed=0, views=2)
    assert second.build_seconds == first.build_seconds
    assert sum("building" in m for m in messages) == 1


def test_default_views_follow_the_epochs():
    assert cache_views(6, None) == 6
    assert cache_views(300, None) == 300
    assert cache_views(6, 4) == 4


def _train(tmp_path, name, cache, seed):
    data = {**CONFIG, "seed": seed, "distill": {**CONFIG["distill"], "teacher_cache": cache}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["train", str(path), "-o", str(tmp_path / name), "--no-progress"]) == 0
    return json.loads((tmp_path / name / "metrics.json").read_text())


@pytest.mark.slow
def test_cached_run_matches_the_live_teacher_run(tmp_path):
    """Same views, same seed: the only difference is fp16 rounding of the teacher's logits, so the
    accuracies agree within a few validation images (144 images: 0.035 is 5 images)."""
    for seed in (0, 1):
        cached = _train(tmp_path, f"cached{seed}", "on", seed)
        live = _train(tmp_path, f"live{seed}", "off", seed)
        assert cached["teacher_cache"]
        assert not live["teacher_cache"]
        assert abs(cached["val_acc"] - live["val_acc"]) <= 0.035, (seed, cached["val_acc"], live["val_acc"])
        assert cached["val_acc"] > 0.3, "learns: chance is 0.1"


@pytest.fixture(scope="module")
def built(tmp_path_factory, splits, teacher) -> LogitCache:
    """One reference cache; each test damages its own copy (a new file, as a fresh process sees it)."""
    return open_or_build(teacher, splits, tmp_path_factory.mktemp("ref") / "c", seed=0, views=2)


def _copy(built: LogitCache, tmp_path: Path) -> Path:
    folder = tmp_path / "c"
    shutil.copytree(built.folder, folder)
    return folder


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _finite_garbage(path: Path) -> None:
    count = path.stat().st_size // 2
    path.write_bytes(np.random.default_rng(0).uniform(-5, 5, count).astype(np.float16).tobytes())


@pytest.mark.parametrize("damage", [_truncate, _random_bytes, _finite_garbage])
def test_damaged_cache_is_one_warning_and_rebuilt_equal(tmp_path, splits, teacher, built, damage: Callable):
    folder = _copy(built, tmp_path)
    damage(folder / "logits.f16")
    with log_lines() as messages:
        cache = open_or_build(teacher, splits, folder, seed=0, views=2)
    warnings = [m for m in messages if "rebuilding" in m]
    assert len(warnings) == 1, messages
    assert str(folder / "logits.f16") in warnings[0], messages
    assert sum("building the teacher-logit cache" in m for m in messages) == 1
    assert np.array_equal(np.fromfile(cache.path, np.float16), np.fromfile(built.path, np.float16))
    assert cache.sha256 == built.sha256 == file_digest(cache.path)


def test_a_worker_refuses_a_cache_damaged_after_the_driver_checked_it(tmp_path, built):
    """Workers get the cache's fields, not the driver's check: they verify before mapping."""
    folder = _copy(built, tmp_path)
    cache = LogitCache(**{**asdict(built), "folder": str(folder)})
    _finite_garbage(cache.path)
    with pytest.raises(CorruptFileError, match="logits.f16: content differs"):
        cache.lookup(torch.arange(4), 0)


def test_cache_from_an_older_version_is_upgraded_not_rebuilt(tmp_path, splits, teacher, built):
    folder = _copy(built, tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    old = {k: v for k, v in meta.items() if k not in ("files", "sha256")} | {"folder": str(folder)}
    (folder / "meta.json").write_text(json.dumps(old))
    with log_lines() as messages:
        cache = open_or_build(teacher, splits, folder, seed=0, views=2)
    assert not any("building" in m for m in messages)
    assert any("checksums recorded" in m for m in messages)
    assert cache.sha256 == built.sha256
    assert json.loads((folder / "meta.json").read_text())["files"] == meta["files"]


def test_an_older_cache_with_nan_is_rebuilt(tmp_path, splits, teacher, built):
    folder = _copy(built, tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k not in ("files", "sha256")}))
    _random_bytes(folder / "logits.f16")
    with log_lines() as messages:
        open_or_build(teacher, splits, folder, seed=0, views=2)
    assert sum("NaN/inf" in m for m in messages) == 1


class _Hashes(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.paths: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("hashed "):
            self.paths.append(record.getMessage())


def test_a_file_is_hashed_once_per_process(tmp_path, splits, teacher, built):
    folder = _copy(built, tmp_path)
    hashes, files_log = _Hashes(), logging.getLogger("ofasearch.utils.files")
    files_log.addHandler(hashes)
    old_level = files_log.level
    files_log.setLevel(logging.DEBUG)
    try:
        for _ in range(3):
            open_or_build(teacher, splits, folder, seed=0, views=2).lookup(torch.arange(2), 1)
    finally:
        files_log.removeHandler(hashes)
        files_log.setLevel(old_level)
    assert len(hashes.paths) == 1, hashes.paths


def test_files_and_folders_follow_the_umask(tmp_path, splits, teacher):
    old = os.umask(0o007)
    try:
        cache = open_or_build(teacher, splits, tmp_path / "c", seed=0, views=1)
    finally:
        os.umask(old)
    folder = Path(cache.folder)
    assert folder.stat().st_mode & 0o777 == 0o770
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {"logits.f16": 0o660, "meta.json": 0o660}


def test_a_complete_cache_is_opened_without_its_lock(tmp_path, splits, teacher, built):
    folder = _copy(built, tmp_path)
    open_or_build(teacher, splits, folder, seed=0, views=2)
    assert not list(tmp_path.glob("*.lock")), "the lock is for building only"


def test_cached_logits_equal_the_live_teacher_under_mixup(tmp_path):
    """Under the paper's ViT recipe (RandomResizedCrop, RandAugment, colour jitter, random
    erasing, mixup 0.8 / cutmix 1.0 with label smoothing) each view is replayable per (seed, view,
    sample): the cached logits of every batch, in the loop's shuffled order, equal the live
    teacher's logits on the images that batch trains on."""
    splits = load_splits(DataSpec(dataset="digits", image_size=32, train_subset=120))
    augment_spec = AugmentSpec(**recipe_section("paper-vit", "augment"))
    assert augment_spec.mixes
    assert augment_spec.auto_augment
    assert augment_spec.re_prob > 0
    torch.manual_seed(0)
    teacher = build_model("resnet10t", num_classes=10, in_chans=1, image_size=32).eval()
    mean_std = (splits.mean, splits.std)
    cache = open_or_build(
        teacher, splits, tmp_path / "c", seed=5, views=2, pipeline=Pipeline(augment_spec, splits), mean_std=mean_std
    )
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in mean_std)
    live_pipeline = Pipeline(augment_spec, splits)  # a fresh one, as a training run has
    for epoch in range(2):
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            images, targets = live_pipeline.train_batch(splits.train, idx, seed=5, view=epoch)
            assert targets.shape == (len(idx), 10), "mixed: soft labels"
            with torch.no_grad():
                live = teacher((images - mean) / std)
            torch.testing.assert_close(cache.lookup(idx, epoch), live, atol=2e-2, rtol=1e-3)
