"""ofasearch: search OFA-KD distillation setups between heterogeneous timm architectures.

The public API is imported lazily, so ``import ofasearch.results`` (and ``ofasearch status``) does
not load torch, timm or ray; ``from ofasearch import OFADistiller`` loads them when asked.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from ofasearch.config.loading import install_model_check

try:
    __version__ = version("ofasearch")  # one source: pyproject.toml
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "OFADistiller": "ofasearch.distill",
    "kd_loss": "ofasearch.distill",
    "ofa_loss": "ofasearch.distill",
    "SpecError": "ofasearch.errors",
    "Spec": "ofasearch.config",
    "TrainConfig": "ofasearch.config",
    "load_config": "ofasearch.config",
    "load_spec": "ofasearch.config",
    "load_student": "ofasearch.models.student_folder",
}
__all__ = [
    "OFADistiller",
    "Spec",
    "SpecError",
    "TrainConfig",
    "kd_loss",
    "load_config",
    "load_spec",
    "load_student",
    "ofa_loss",
]

if TYPE_CHECKING:
    from ofasearch.config import Spec, TrainConfig, load_config, load_spec
    from ofasearch.distill import OFADistiller, kd_loss, ofa_loss
    from ofasearch.errors import SpecError
    from ofasearch.models.student_folder import load_student


def _timm_model_check(name: str) -> str | None:
    """Whether timm can build ``name`` (the models layer's check, loaded on first use)."""
    from ofasearch.models.factory import unknown_model_message

    return unknown_model_message(name)


# the package wires its layers: the config layer checks model names through the models layer's
# check without importing it (tests/test_layers.py holds every layer to its imports)
install_model_check(_timm_model_check)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ofasearch' has no attribute {name!r}")
