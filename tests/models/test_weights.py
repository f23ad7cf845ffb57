"""Checkpoints as people have them: timm-0.6 training checkpoints with old key layouts, ``model``
wrappers and DDP prefixes, safetensors; a misfit is one line naming the first mismatching keys."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ofasearch.errors import SpecError
from ofasearch.models import build_model, load_weights, read_state_dict
from ofasearch.models.weights import mismatch
from tests.helpers.checkpoints import SHAPE, SWIN, SWIN_KWARGS, swin, timm06_checkpoint


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_a_timm06_training_checkpoint_loads_through_timms_filter(tmp_path):
    original = swin(seed=0)
    path = timm06_checkpoint(original, tmp_path / "swin_tiny_cifar100.pth")
    fresh = swin(seed=1)
    assert mismatch(fresh, read_state_dict(path)), "the old layout does not fit as it is"
    assert not _same_outputs(fresh, original)
    load_weights(fresh, path)
    assert _same_outputs(fresh, original)


def test_model_wrapper_prefixes_and_safetensors_load(tmp_path):
    original = swin(seed=0)
    state = original.state_dict()
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "deit_style.pth")
    save_file({f"_orig_mod.{k}": v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    for name in ("deit_style.pth", "w.safetensors"):
        fresh = swin(seed=1)
        load_weights(fresh, tmp_path / name)
        assert _same_outputs(fresh, original), name


def test_a_misfit_names_the_first_mismatching_keys_in_one_line(tmp_path):
    other_classes = build_model(SWIN, SWIN_KWARGS, num_classes=100, in_chans=1, image_size=16)
    torch.save({"state_dict": other_classes.state_dict()}, tmp_path / "c100.pth")
    with pytest.raises(SpecError) as caught:
        load_weights(swin(seed=0), tmp_path / "c100.pth")
    (line,) = caught.value.problems
    assert "c100.pth" in line
    assert "shape 2: head.fc.weight (100, 192) vs model (10, 192)" in line
    assert "head.fc.bias (100,) vs model (10,)" in line

    resnet = build_model("resnet10t", **SHAPE)
    save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(tmp_path / "resnet.safetensors"))
    with pytest.raises(SpecError) as caught:
        load_weights(swin(seed=0), tmp_path / "resnet.safetensors")
    (line,) = caught.value.problems
    first_three = r"\S+, \S+, \S+ \(\+\d+ more\)"
    assert re.search(rf"missing \d+: {first_three}; unexpected \d+: {first_three}$", line), line
    assert "patch_embed.proj.weight" in line
    assert "conv1.0.weight" not in line.split("unexpected")[0]


class NotWeights:
    """Something a pickle would have to run code to rebuild."""


def test_a_checkpoint_pickling_other_objects_is_refused_without_running_them(tmp_path):
    torch.save({"state_dict": swin(seed=0).state_dict(), "extra": NotWeights()}, tmp_path / "odd.pth")
    with pytest.raises(SpecError, match="pickles objects other than weights.*NotWeights"):
        read_state_dict(tmp_path / "odd.pth")
