"""The names a config may use, with what the schema and the layers above need to know of each.

One entry per dataset, distillation method and optimiser. The entries here are plain data (no
torch), so the schema can validate names without importing the implementations; each
implementation module keeps a dict keyed by the same names (a test checks they agree), the way
timm and torchdistill register models and losses.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BASELINE_METHODS",
    "DATASETS",
    "METHODS",
    "OPTIMIZERS",
    "DatasetInfo",
    "MethodInfo",
    "get_dataset",
    "get_method",
]


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset ofasearch can load: its default image size and whether a horizontal flip keeps
    the label (digits: no)."""

    default_image_size: int
    flip: bool


@dataclass(frozen=True)
class MethodInfo:
    """A distillation method: ``teacher`` says whether it needs the teacher's logits; ``branches``
    whether it trains exit branches on the student's stages; ``label`` is how tables name it."""

    teacher: bool
    branches: bool
    label: str


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(default_image_size=28, flip=True),
    "digits": DatasetInfo(default_image_size=16, flip=False),
    "cifar10": DatasetInfo(default_image_size=32, flip=True),
    "cifar100": DatasetInfo(default_image_size=32, flip=True),
    "imagefolder": DatasetInfo(default_image_size=64, flip=True),
}

METHODS: dict[str, MethodInfo] = {
    "ofa": MethodInfo(teacher=True, branches=True, label="OFA-KD"),
    "kd": MethodInfo(teacher=True, branches=False, label="vanilla KD"),
    # settings distill.dkd_* and distill.dist_*, defaults from their papers (see the schema)
    "dkd": MethodInfo(teacher=True, branches=False, label="DKD"),
    "dist": MethodInfo(teacher=True, branches=False, label="DIST"),
    "none": MethodInfo(teacher=False, branches=False, label="student alone"),
}

# the methods a search can run as per-pair baselines: every one without exit branches
BASELINE_METHODS: tuple[str, ...] = tuple(
    sorted((name for name, info in METHODS.items() if not info.branches), key=lambda name: name != "none")
)

OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")  # names timm.optim.create_optimizer_v2 knows


def get_dataset(name: str) -> DatasetInfo:
    """The registry entry of ``name``; a KeyError names the allowed values."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r} (allowed: {', '.join(DATASETS)})") from None


def get_method(name: str) -> MethodInfo:
    """The registry entry of ``name``; a KeyError names the allowed values."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown distillation method {name!r} (allowed: {', '.join(METHODS)})") from None
