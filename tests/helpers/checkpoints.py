"""Checkpoints as people have them, written by the tests: a timm-0.6 training checkpoint of a small
Swin (the layout the OFA-KD authors released their CIFAR-100 teachers in)."""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

import torch
from torch import nn

from ofasearch.models import build_model

SWIN = "swin_tiny_patch4_window7_224"
SWIN_KWARGS = {"patch_size": 2, "window_size": 4, "embed_dim": 24, "depths": (2, 1, 1, 1), "num_heads": (1, 1, 2, 2)}
SHAPE = {"num_classes": 10, "in_chans": 1, "image_size": 16}


def swin(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(SWIN, SWIN_KWARGS, **SHAPE).eval()


def timm06_swin_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s weights as timm 0.6 named them: patch merging at the *end* of stage i (timm 1.0:
    start of stage i + 1), the classifier at ``head`` (1.0: ``head.fc``), and the relative-position
    indices and attention masks stored as persistent buffers."""
    state = {}
    for key, value in model.state_dict().items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        state[key.replace("head.fc.", "head.")] = value
    for key, value in model.named_buffers():
        if key.endswith(("relative_position_index", "attn_mask")):
            state[key] = value
    return state


def timm06_checkpoint(model: nn.Module, path: Path) -> Path:
    """What timm 0.6's CheckpointSaver (and the reference's train.py) writes, from a DDP run."""
    state = timm06_swin_layout(model)
    torch.save(
        {
            "epoch": 299,
            "arch": SWIN,
            "state_dict": collections.OrderedDict((f"module.{k}", v) for k, v in state.items()),
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]},
            "version": 2,
            "args": argparse.Namespace(model=SWIN, lr=5e-4, ofa_eps=[1.0], num_classes=100, smoothing=0.1),
            "metric": 89.26,
            "state_dict_ema": {k: torch.zeros_like(v) for k, v in state.items()},  # not what is loaded
        },
        path,
    )
    return path
