"""The teacher store: a damaged auto teacher is retrained, a damaged user checkpoint is refused in
one line, and a complete store is read without write access."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from ofasearch.config import DataSpec, DistillSpec, ModelSpec
from ofasearch.data import Splits, load_splits
from ofasearch.errors import SpecError
from ofasearch.training.teacher import TeacherInfo, build_teacher, prepare_logit_cache, prepare_teacher, teacher_key
from ofasearch.utils.files import file_digest
from tests.helpers.checkpoints import SWIN, SWIN_KWARGS, swin, timm06_checkpoint
from tests.helpers.logcapture import log_lines

DATA = DataSpec(dataset="digits", image_size=16, train_subset=300)
TEACHER = ModelSpec(model="resnet10t", checkpoint="auto", recipe={"epochs": 2, "batch_size": 64})
DISTILL = DistillSpec(method="ofa", teacher_cache="on")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_splits(DATA)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private teacher store for this module."""
    path = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OFASEARCH_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def trained(store: Path, splits: Splits) -> TeacherInfo:
    """The teacher as first trained, with its logit cache: what every repair must reproduce."""
    info = prepare_teacher(TEACHER, DATA, splits)
    assert info.trained_now
    prepare_logit_cache(TEACHER, info, DATA, splits, DISTILL, seed=0, epochs=2)
    return info


def _folder(store: Path) -> Path:
    return store / "teachers" / teacher_key(TEACHER, DATA)


def _warnings(messages: list[str]) -> list[str]:
    return [m for m in messages if "retraining" in m or "rebuilding" in m]


def test_stored_teacher_records_its_checksum_and_is_group_readable(store, trained):
    meta = json.loads((_folder(store) / "meta.json").read_text())
    weights = _folder(store) / "teacher.safetensors"
    assert meta["files"]["teacher.safetensors"] == {"size": weights.stat().st_size, "sha256": file_digest(weights)}
    assert trained.sha256 == file_digest(weights)
    umask = os.umask(0)
    os.umask(umask)
    assert weights.stat().st_mode & 0o777 == 0o666 & ~umask, "not 0600: a group shares the store"


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _random_megabyte_inside(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 3)
        f.write(os.urandom(1 << 20))


@pytest.mark.parametrize("damage", [_truncate, _random_megabyte_inside])
def test_damaged_auto_teacher_is_retrained_to_the_same_weights(store, splits, trained, damage):
    weights = _folder(store) / "teacher.safetensors"
    damage(weights)
    with log_lines() as messages:
        info = prepare_teacher(TEACHER, DATA, splits)
    warnings = _warnings(messages)
    assert len(warnings) == 1, messages
    assert str(weights) in warnings[0], messages
    assert info.trained_now, "accuracy measured again"
    assert info.val_acc == trained.val_acc, "accuracy measured again"
    assert file_digest(weights) == trained.sha256 == info.sha256, "seeded training gives the same weights"
    again = prepare_teacher(TEACHER, DATA, splits)
    assert not again.trained_now


def test_teacher_from_an_older_version_is_upgraded_not_retrained(store, splits, trained):
    meta_path = _folder(store) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "files"}))
    with log_lines() as messages:
        info = prepare_teacher(TEACHER, DATA, splits)
    assert not info.trained_now
    assert not _warnings(messages)
    assert json.loads(meta_path.read_text())["files"] == meta["files"], "checksums added"


@pytest.fixture(scope="module")
def user_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=10, in_chans=1)
    path = tmp_path_factory.mktemp("user") / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_a_valid_user_checkpoint_is_used_as_is(splits, user_checkpoint):
    info = prepare_teacher(ModelSpec(model="resnet10t", checkpoint=str(user_checkpoint)), DATA, splits)
    assert info.checkpoint == str(user_checkpoint)
    assert not info.trained_now


@pytest.mark.parametrize("damage", [_truncate, _random_megabyte_inside])
def test_a_corrupt_user_checkpoint_is_one_spec_error_naming_it(tmp_path, splits, user_checkpoint, damage):
    path = tmp_path / user_checkpoint.name
    shutil.copy(user_checkpoint, path)
    damage(path)
    with pytest.raises(SpecError) as caught:
        prepare_teacher(ModelSpec(model="resnet10t", checkpoint=str(path)), DATA, splits)
    assert len(caught.value.problems) == 1
    assert str(path) in caught.value.problems[0]


def _shared_copy(store: Path) -> Path:
    """The store copied somewhere every user can traverse (pytest's folders are 0700)."""
    shared = Path(tempfile.mkdtemp(prefix="ofasearch-shared-"))
    shared.chmod(0o755)
    shutil.copytree(store, shared / "store")
    (shared / "store").chmod(0o755)  # the copied root was pytest's 0700 folder; the entries keep their modes
    for lock in (shared / "store").rglob("*.lock"):
        lock.unlink()
    return shared


READER = """
import os, sys
from ofasearch.config import DataSpec, DistillSpec, ModelSpec
from ofasearch.data import load_splits
from ofasearch.training.teacher import prepare_logit_cache, prepare_teacher
data = DataSpec(dataset="digits", image_size=16, train_subset=300)
teacher = ModelSpec(model="resnet10t", checkpoint="auto", recipe={"epochs": 2, "batch_size": 64})
splits = load_splits(data)
info = prepare_teacher(teacher, data, splits)
distill = DistillSpec(method="ofa", teacher_cache="on")
cache = prepare_logit_cache(teacher, info, data, splits, distill, seed=0, epochs=2)
assert not info.trained_now and cache.lookup(__import__("torch").arange(3), 0).shape == (3, 10)
print("read-only OK")
"""


def test_a_read_only_store_is_read_without_write_access(store, trained):
    shared = _shared_copy(store)
    try:
        subprocess.run(["chmod", "-R", "a-w", str(shared / "store")], check=True)
        before = sorted(p.name for p in (shared / "store").rglob("*"))
        prefix: list[str] = []
        if os.geteuid() == 0:  # root writes anywhere: read as nobody, who cannot
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv to read as another user")
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        elif os.access(shared / "store" / "teachers", os.W_OK):
            pytest.skip("this user can write to a read-only folder")
        env = {**os.environ, "OFASEARCH_CACHE": str(shared / "store"), "HOME": str(shared)}
        done = subprocess.run(
            [*prefix, sys.executable, "-c", READER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "read-only OK" in done.stdout, done.stderr[-2000:]
        assert sorted(p.name for p in (shared / "store").rglob("*")) == before, "nothing written"
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(shared)], check=True)
        shutil.rmtree(shared)


def test_no_lock_file_is_opened_when_nothing_is_built(store, splits, trained):
    """Also meaningful as root, whom a read-only folder does not stop."""
    for lock in store.rglob("*.lock"):
        lock.unlink()
    info = prepare_teacher(TEACHER, DATA, splits)
    prepare_logit_cache(TEACHER, info, DATA, splits, DISTILL, seed=0, epochs=2)
    assert not info.trained_now
    assert not list(store.rglob("*.lock"))


def test_a_timm06_teacher_checkpoint_is_used_as_the_teacher(tmp_path, splits):
    """The form the OFA-KD authors released their teachers in: timm 0.6's training checkpoint of a
    Swin, with the old key layout, DDP prefixes and the run's arguments."""
    original = swin(seed=0)
    path = timm06_checkpoint(original, tmp_path / "swin_teacher.pth")
    spec = ModelSpec(model=SWIN, kwargs=SWIN_KWARGS, checkpoint=str(path))
    info = prepare_teacher(spec, DATA, splits)
    teacher = build_teacher(spec, info, splits)
    images = torch.rand(4, *splits.input_size)
    with torch.no_grad():
        assert torch.equal(teacher(images), original(images))


def test_a_teacher_checkpoint_for_other_classes_names_the_keys(tmp_path, splits):
    other = timm.create_model("resnet10t", num_classes=100, in_chans=1)
    torch.save({"state_dict": other.state_dict()}, tmp_path / "c.pth")
    with pytest.raises(SpecError) as caught:
        prepare_teacher(ModelSpec(model="resnet10t", checkpoint=str(tmp_path / "c.pth")), DATA, splits)
    (line,) = caught.value.problems
    assert line.startswith("teacher.checkpoint: ")
    assert "fc.weight (100, 512) vs model (10, 512)" in line


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, trained: TeacherInfo) -> list[str]:
    """`pretrained: true` served offline: timm's Hugging Face download (the one outside call)
    answers with the trained teacher's weights; returns the hub ids asked for."""
    from timm.models import _builder

    asked: list[str] = []

    def download(location, *args, **kwargs):
        asked.append(str(location))
        return load_file(str(trained.checkpoint))

    monkeypatch.setattr(_builder, "load_state_dict_from_hf", download)
    return asked


def test_pretrained_with_a_recipe_is_fine_tuned_from_the_pretrained_weights(store, splits, trained, hub):
    """The paper's teachers are ImageNet weights fine-tuned on the data. A nearly frozen fine-tune
    (lr 1e-7, one epoch) ends where it started: at the pretrained weights (the hub's 1000-class
    head is replaced by a new one for these classes, as timm does)."""
    still = {"epochs": 1, "lr": 1e-7, "batch_size": 64}
    spec = ModelSpec(model="resnet10t", pretrained=True, recipe=still)
    assert spec.fine_tunes
    assert spec.checkpoint == "auto"
    with log_lines() as messages:
        tuned = prepare_teacher(spec, DATA, splits)
    assert tuned.trained_now
    assert tuned.checkpoint != trained.checkpoint
    assert hub
    assert any("fine-tuning pretrained teacher resnet10t" in m for m in messages), messages
    start, end = load_file(str(trained.checkpoint)), load_file(str(tuned.checkpoint))
    weights = [k for k in start if k.endswith(".weight") and "bn" not in k and start[k].dim() > 1 and k != "fc.weight"]
    assert weights
    assert all(torch.allclose(start[k], end[k], atol=1e-5) for k in weights)
    assert torch.cat([(start[k] - end[k]).flatten() for k in weights]).abs().max() > 0, "it was trained"
    again = prepare_teacher(spec, DATA, splits)
    assert not again.trained_now, "kept like a trained teacher"
    assert again.checkpoint == tuned.checkpoint, "kept like a trained teacher"
    # the stored teacher loads from its file, without reaching for the hub's weights again
    hub.clear()
    build_teacher(spec, again, splits)
    assert hub == []


def test_pretrained_without_a_recipe_teaches_as_it_is(store, splits, trained, hub):
    spec = ModelSpec(model="resnet10t", pretrained=True)
    assert not spec.fine_tunes
    assert spec.checkpoint is None
    info = prepare_teacher(spec, DATA, splits)
    assert info.checkpoint is None
    assert not info.trained_now


def test_a_recipe_beside_a_checkpoint_file_is_refused(user_checkpoint):
    with pytest.raises(ValueError, match="recipe trains a teacher .* is used as it is: remove recipe or checkpoint"):
        ModelSpec(model="resnet10t", checkpoint=str(user_checkpoint), recipe={"epochs": 1})
