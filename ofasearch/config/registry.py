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
    "BASELINE_PRESETS",
    "BRANCH_LOSSES",
    "DATASETS",
    "LOSSES",
    "METHODS",
    "OPTIMIZERS",
    "RECIPES",
    "DatasetInfo",
    "LossInfo",
    "MethodInfo",
    "baseline_settings",
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


@dataclass(frozen=True)
class LossInfo:
    """A loss one term of a composition can use: the ``distill.*`` settings it reads (by the
    name of the loss object's own parameter), whether an exit branch may use it (DKD's warm-up and
    target/non-target split are defined for the final logits only), and how tables name it."""

    params: dict[str, str]
    branch: bool
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
    "ofa": MethodInfo(teacher=True, branches=True, label="OFA-KD"),  # the frame of compositions
    "kd": MethodInfo(teacher=True, branches=False, label="vanilla KD"),
    "dkd": MethodInfo(teacher=True, branches=False, label="DKD"),
    "dist": MethodInfo(teacher=True, branches=False, label="DIST"),
    "none": MethodInfo(teacher=False, branches=False, label="student alone"),
}

# The losses a composition's terms choose from (``distill.logit_loss``, ``distill.branch_loss``);
# each maps its own parameters to the distill settings that hold them. ofasearch.distill.criteria
# registers one loss object per name.
LOSSES: dict[str, LossInfo] = {
    "ofa": LossInfo({"eps": "eps", "temperature": "temperature"}, branch=True, label="OFA"),
    "kd": LossInfo({"temperature": "temperature"}, branch=True, label="KD"),
    "dkd": LossInfo(
        {"alpha": "dkd_alpha", "beta": "dkd_beta", "temperature": "dkd_temperature"}, branch=False, label="DKD"
    ),
    "dist": LossInfo(
        {"beta": "dist_beta", "gamma": "dist_gamma", "temperature": "dist_temperature"}, branch=True, label="DIST"
    ),
}
BRANCH_LOSSES: tuple[str, ...] = tuple(name for name, info in LOSSES.items() if info.branch)

# Each baseline at its authors' settings, or at the settings the OFA paper ran it with. Values are
# distill settings (dotted paths) applied over the pair's defaults; "cifar" holds for every
# small-image dataset (CIFAR, Fashion-MNIST, digits), "imagenet" for imagefolder data.
# - DKD, authors: mdistiller configs/cifar100/dkd/*.yaml (alpha 1, beta 8, T 4, warm-up 20 of 240
#   epochs; beta 2 or 6 for some same-family pairs) and configs/imagenet/r34_r18/dkd.yaml (alpha 1,
#   beta 0.5, T 1, warm-up 1 epoch; beta 2 for ResNet-50 -> MobileNet). The warm-up is left to
#   dkd_warmup_epochs' default (the 20/240 share) on CIFAR and is one epoch on ImageNet.
# - DIST, authors: github.com/hunto/DIST_KD (beta 1, gamma 1; CIFAR tau 4, ImageNet tau 1; loss
#   weight 2 on both).
# - KD, authors: Hinton et al. as mdistiller runs it: CIFAR-100 T 4, CE weight 0.1, KD weight 0.9
#   (mdistiller/engine/cfg.py); ImageNet T 1, weights 0.5 and 0.5 (configs/imagenet/r34_r18/kd.yaml).
# - ofa-paper: the OFA paper's own baseline runs (Hao et al. 2023, appendix; DESIGN section 7):
#   KD T 1, DKD alpha 1, beta 2, T 1, DIST beta = gamma = T = 1, every loss weight 1.
BASELINE_PRESETS: dict[str, dict[str, dict[str, dict[str, object]]]] = {
    "authors": {
        "cifar": {
            "kd": {"distill.temperature": 4.0, "distill.gt_weight": 0.1, "distill.kd_weight": 0.9},
            "dkd": {"distill.dkd_alpha": 1.0, "distill.dkd_beta": 8.0, "distill.dkd_temperature": 4.0},
            "dist": {
                "distill.dist_beta": 1.0,
                "distill.dist_gamma": 1.0,
                "distill.dist_temperature": 4.0,
                "distill.kd_weight": 2.0,
            },
        },
        "imagenet": {
            "kd": {"distill.temperature": 1.0, "distill.gt_weight": 0.5, "distill.kd_weight": 0.5},
            "dkd": {
                "distill.dkd_alpha": 1.0,
                "distill.dkd_beta": 0.5,
                "distill.dkd_temperature": 1.0,
                "distill.dkd_warmup_epochs": 1,
            },
            "dist": {
                "distill.dist_beta": 1.0,
                "distill.dist_gamma": 1.0,
                "distill.dist_temperature": 1.0,
                "distill.kd_weight": 2.0,
            },
        },
    },
    "ofa-paper": {
        kind: {
            "kd": {"distill.temperature": 1.0, "distill.kd_weight": 1.0},
            "dkd": {"distill.dkd_alpha": 1.0, "distill.dkd_beta": 2.0, "distill.dkd_temperature": 1.0},
            "dist": {
                "distill.dist_beta": 1.0,
                "distill.dist_gamma": 1.0,
                "distill.dist_temperature": 1.0,
                "distill.kd_weight": 1.0,
            },
        }
        for kind in ("cifar", "imagenet")
    },
}


def baseline_settings(preset: str, dataset: str, method: str) -> dict[str, object]:
    """The distill settings (dotted paths) of baseline ``method`` under ``preset`` for ``dataset``;
    {} for a method without settings (the student alone)."""
    kind = "imagenet" if dataset == "imagefolder" else "cifar"
    return dict(BASELINE_PRESETS[preset][kind].get(method, {}))


# the methods a search can run as per-pair baselines: every one without exit branches
BASELINE_METHODS: tuple[str, ...] = tuple(
    sorted((name for name, info in METHODS.items() if not info.branches), key=lambda name: name != "none")
)

OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")  # names timm.optim.create_optimizer_v2 knows

# Training recipes: named presets of optim.* and augment.* values (dotted paths). A config's own
# values win over its recipe's. The paper's are the reference code's configs as its train.py runs
# them (Hao et al. 2023, Hao840/OFAKD at f7bb896, timm 0.6.5); file:line of each value below, and
# where the authors' posted runs differ (in the reference repository's GitHub issues, cited as
# "issue #N": github.com/Hao840/OFAKD/issues/N), which a spec's pair settings then follow
# (search_spaces/*_paper.yaml).
# - every config: global batch = 8 GPUs x its batch_size (issue #6), label smoothing 0.1,
#   RandomResizedCrop + flip with a random interpolation (train.py:233-237, 279), the schedule
#   stepped per epoch (train.py:744: step_update is a no-op for timm's epoch schedulers), a linear
#   warm-up from warmup_lr (train.py:209: 1e-4 where a config sets none) counted inside the
#   schedule (timm's create_scheduler passes no warmup_prefix), no weight EMA scored (train.py
#   reports the raw model's best, 716-755; an EMA is only logged, so none is kept here).
# - CIFAR-100 (train.py:480-487): the data's mean/std for both models, 224 px upsampled.
# - eval: timm's resize + centre crop with the student's own crop_pct and interpolation
#   (train.py:453, 644-657): resnet18 0.875 bilinear (the CNN presets), DeiT-T and Swin 0.9
#   bicubic (the ViT presets); MobileNetV2 and ResMLP (0.875 bicubic) set it per pair.
PAPER_COMMON: dict[str, object] = {
    "optim.epochs": 300,
    "optim.batch_size": 1024,
    "optim.warmup_prefix": False,
    "optim.step_on": "epoch",
    "augment.crop": "rrc",
    "augment.normalize": "dataset",
    "augment.label_smoothing": 0.1,
}
PAPER_CNN: dict[str, object] = {
    **PAPER_COMMON,
    "optim.name": "sgd",  # timm's "sgd" is Nesterov SGD
    "optim.momentum": 0.9,  # train.py:179
    "optim.warmup_epochs": 3,
    "optim.warmup_lr": 1e-4,  # train.py:209 (issue #14's ResNet-18 log shows 1e-6)
    "optim.clip_grad": 0.0,  # train.py:183: none
    "augment.color_jitter": 0.0,
    "augment.eval_crop_pct": 0.875,
    "augment.eval_interpolation": "bilinear",
}
PAPER_VIT: dict[str, object] = {
    **PAPER_COMMON,
    "optim.name": "adamw",
    "optim.lr": 5e-4,
    "optim.weight_decay": 0.05,
    "optim.warmup_epochs": 20,
    "optim.warmup_lr": 5e-7,
    "optim.clip_grad": 5.0,
    # timm turns colour jitter off under RandAugment, as in the reference's timm 0.6
    "augment.color_jitter": 0.4,
    "augment.re_prob": 0.25,
    "augment.auto_augment": "rand-m9-mstd0.5-inc1",
    "augment.mixup": 0.8,
    "augment.cutmix": 1.0,
    "augment.eval_crop_pct": 0.9,
    "augment.eval_interpolation": "bicubic",
}
RECIPES: dict[str, dict[str, object]] = {
    # today's behaviour: every value is the schema's default
    "default": {},
    # CIFAR-100, CNN students: configs/cifar/cnn.yaml:1-10 (SGD 0.05, wd 2e-3, cosine to 1e-3, 3
    # warm-up epochs); issue #14's posted ResNet-18 run used lr 0.1 and warm-up from 1e-6
    "paper-cnn": {
        **PAPER_CNN,
        "optim.lr": 0.05,
        "optim.weight_decay": 2e-3,
        "optim.schedule": "cosine",
        "optim.min_lr": 1e-3,
    },
    # CIFAR-100, ViT/MLP students: configs/cifar/vit_mlp.yaml:1-16 (AdamW 5e-4, wd 0.05, cosine to
    # 1e-5, 20 warm-up epochs from 5e-7, clip 5, RandAugment m9, mixup 0.8, cutmix 1.0, random
    # erasing 0.25, colour jitter 0.4); issue #19's posted DeiT-T/Swin-P run ended at 1e-6
    "paper-vit": {**PAPER_VIT, "optim.schedule": "cosine", "optim.min_lr": 1e-5},
    # ImageNet-1K, CNN students: configs/imagenet/cnn.yaml:1-11 (100 epochs, batch 8 x 64, SGD
    # 0.1, wd 1e-4, the lr x0.1 every 30 epochs, 3 warm-up epochs; its min_lr 1e-6 does not act
    # on a step schedule), the student's own mean/std for both models (ImageNet's for imagefolder)
    "paper-imagenet-cnn": {
        **PAPER_CNN,
        "optim.epochs": 100,
        "optim.batch_size": 512,
        "optim.lr": 0.1,
        "optim.weight_decay": 1e-4,
        "optim.schedule": "step",
        "optim.decay_epochs": 30,
        "optim.decay_rate": 0.1,
    },
    # ImageNet-1K, ViT/MLP students: configs/imagenet/vit_mlp.yaml:1-21 (as CIFAR's, cosine to
    # 1e-6; its drop_path 0 is the student's kwargs, drop_path_rate: 0, in the spec)
    "paper-imagenet-vit": {**PAPER_VIT, "optim.schedule": "cosine", "optim.min_lr": 1e-6},
}


def recipe_section(name: str, section: str) -> dict[str, object]:
    """Recipe ``name``'s values of one config section (``augment``, ``optim``), keyed by field:
    what that section's model takes, e.g. ``AugmentSpec(**recipe_section("paper-vit", "augment"))``."""
    prefix = f"{section}."
    return {path.removeprefix(prefix): value for path, value in RECIPES[name].items() if path.startswith(prefix)}


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
