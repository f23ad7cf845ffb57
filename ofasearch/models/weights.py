"""Checkpoints as people have them, loaded into a timm model.

Teachers come from elsewhere: the OFA-KD authors released theirs as timm-0.6 training checkpoints
(a ``.pth`` holding ``state_dict`` beside ``optimizer``, ``epoch`` and the run's ``argparse``
arguments), others save ``{"model": ...}``, a bare state dict with DDP's ``module.`` prefix, or
safetensors. Key layouts also moved between timm versions (Swin's patch merging moved from the
end of a stage to the start of the next, its head became ``head.fc``); timm converts those with
the ``checkpoint_filter_fn`` of the model's own module, which is tried whenever the keys do not
fit as they are. What still does not fit is one error naming the first mismatching keys.
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from timm.models import clean_state_dict
from torch import nn

from ofasearch.errors import SpecError

__all__ = ["load_weights", "mismatch", "read_state_dict"]

# Where a training checkpoint keeps the weights, most specific first: timm's CheckpointSaver and
# the reference code write ``state_dict`` (the EMA copy, ``state_dict_ema``, is not used: the
# reference loads its teachers with ``use_ema=False``); DeiT/ConvNeXt/MAE releases use ``model``.
_WEIGHT_KEYS = ("state_dict", "model", "model_state_dict", "module")
_FILTER_NAMES = ("checkpoint_filter_fn", "_filter_fn")
_SHOWN = 3  # mismatching keys named per kind in an error


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights in a safetensors or torch file, unwrapped from a training checkpoint and with
    wrapper prefixes (``module.``, ``_orig_mod.``) removed.

    Torch files are read with ``weights_only=True`` (no code runs), allowing only the
    ``argparse.Namespace`` that timm's checkpoint saver stores beside the weights."""
    p = Path(path)
    if not p.is_file():
        raise SpecError([f"checkpoint {str(p)!r}: no such file"])
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return clean_state_dict(load_file(str(p)))
    try:
        with _allow(argparse.Namespace):
            state: Any = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc) and "global" not in str(exc).lower():
            raise
        reason = next((line for line in str(exc).splitlines() if "global" in line.lower()), "")
        raise SpecError(
            [
                f"checkpoint {str(p)!r} pickles objects other than weights, which are not loaded "
                f"without running code ({reason.strip()[:150]}); save its state_dict (or safetensors) "
                "and point checkpoint: at that file"
            ]
        ) from None
    while isinstance(state, dict):  # e.g. {"model": {"state_dict": ...}}
        inner = next((state[k] for k in _WEIGHT_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpecError([f"checkpoint {str(p)!r} holds no state dict (found {type(state).__name__})"])
    return clean_state_dict({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})


@contextlib.contextmanager
def _allow(*classes: type) -> Iterator[None]:
    safe = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    if safe is not None:
        with safe(list(classes)):
            yield
        return
    torch.serialization.add_safe_globals(list(classes))
    yield


def mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Why ``state`` does not load strictly into ``model`` (empty when it does): the first few
    missing keys, unexpected keys and shape differences, each named."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    out = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if keys:
            more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
            out.append(f"{label} {len(keys)}: {', '.join(keys[:_SHOWN])}{more}")
    return out


def _timm_filter(model: nn.Module) -> Callable[[dict[str, Any], nn.Module], dict[str, Any]] | None:
    """timm's converter of older or foreign key layouts for this model's architecture."""
    module = sys.modules.get(type(model).__module__)
    for name in _FILTER_NAMES:
        fn = getattr(module, name, None)
        if callable(fn):
            return fn
    return None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint (see :func:`read_state_dict`) strictly into ``model``; a layout from an
    older timm goes through timm's ``checkpoint_filter_fn`` for the model first. A checkpoint
    that fits neither way is a SpecError naming the first mismatching keys, e.g. a classifier
    trained for another number of classes."""
    state = read_state_dict(path)
    problems = mismatch(model, state)
    if problems:
        convert = _timm_filter(model)
        if convert is not None:
            try:
                converted = {k: v for k, v in convert(dict(state), model).items() if isinstance(v, torch.Tensor)}
            except Exception:  # a converter that cannot read this layout: report the layout as it is
                converted = None
            if converted is not None and not mismatch(model, converted):
                state, problems = converted, []
    if problems:
        raise SpecError([f"checkpoint {str(path)!r} does not fit model {type(model).__name__}: {'; '.join(problems)}"])
    model.load_state_dict(state)
