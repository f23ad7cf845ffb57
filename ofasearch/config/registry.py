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
    "RECIPES",
    "DatasetInfo",
    "MethodInfo",
    "get_dataset",
    "get_method",
]


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset ofasearch can load: its default image size, whether a horizontal flip keeps
    the label (digits: no), and its per-channel mean/std of pixels in [0, 1] (what
    ``augment.normalize: dataset`` uses, e.g. the paper's CIFAR normalisation)."""

    default_image_size: int
    flip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class MethodInfo:
    """A distillation method: ``teacher`` says whether it needs the teacher's logits; ``branches``
    whether it trains exit branches on the student's stages; ``label`` is how tables name it."""

    teacher: bool
    branches: bool
    label: str


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's defaults

DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(28, True, (0.2860,), (0.3530,)),
    "digits": DatasetInfo(16, False, (0.3053,), (0.3759,)),
    "cifar10": DatasetInfo(32, True, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetInfo(32, True, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": DatasetInfo(64, True, IMAGENET_MEAN, IMAGENET_STD),
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

# Training recipes: named presets of optim.* and augment.* values (dotted paths). A config's own
# values win over its recipe's. The paper's (Hao et al. 2023, reference code Hao840/OFAKD at
# f7bb896, configs/cifar/*.yaml and the authors' answers in its issues #6, #14, #19, #22):
# CIFAR-100 upsampled to 224 px with RandomResizedCrop + flip, CIFAR mean/std, label smoothing
# 0.1, 300 epochs, global batch 1024 (128 x 8 GPUs).
PAPER_COMMON: dict[str, object] = {
    "optim.epochs": 300,
    "optim.batch_size": 1024,
    "augment.crop": "rrc",
    "augment.normalize": "dataset",
    "augment.label_smoothing": 0.1,
}
RECIPES: dict[str, dict[str, object]] = {
    # today's behaviour: every value is the schema's default
    "default": {},
    # CNN students: SGD (timm's "sgd" is Nesterov), cosine to 1e-3, 3 warm-up epochs, no clipping
    "paper-cnn": {
        **PAPER_COMMON,
        "optim.name": "sgd",
        "optim.lr": 0.05,
        "optim.momentum": 0.9,
        "optim.weight_decay": 2e-3,
        "optim.min_lr": 1e-3,
        "optim.warmup_epochs": 3,
        "optim.clip_grad": 0.0,
    },
    # ViT/MLP students: AdamW, 20 warm-up epochs, clip 5, RandAugment m9, mixup 0.8, cutmix 1.0,
    # random erasing 0.25, colour jitter 0.4 (timm turns colour jitter off under RandAugment, as
    # in the reference's timm 0.6), EMA of the weights (timm train.py's default decay 0.9998);
    # the final lr is timm train.py's default 1e-5 (the issue leaves it open)
    "paper-vit": {
        **PAPER_COMMON,
        "optim.name": "adamw",
        "optim.lr": 5e-4,
        "optim.weight_decay": 0.05,
        "optim.min_lr": 1e-5,
        "optim.warmup_epochs": 20,
        "optim.clip_grad": 5.0,
        "optim.ema_decay": 0.9998,
        "augment.auto_augment": "rand-m9-mstd0.5-inc1",
        "augment.color_jitter": 0.4,
        "augment.re_prob": 0.25,
        "augment.mixup": 0.8,
        "augment.cutmix": 1.0,
    },
}


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
