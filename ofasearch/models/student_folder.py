"""A trained student that says how to build and feed it.

Next to ``student.safetensors`` a run writes ``config.json`` in the format timm itself reads for
``timm.create_model("local-dir:FOLDER", pretrained=True)`` (Hugging Face Hub layout):
``architecture``, ``num_classes``, ``model_args`` (the kwargs plus ``num_classes``, ``in_chans``
and ``img_size`` when the model takes it) and ``pretrained_cfg`` with the exact preprocessing the
student was scored with (a square bilinear resize to ``input_size``, or for students trained on
timm's RandomResizedCrop the shorter side to ``input_size / crop_pct`` and the centre cut out, then
``mean``/``std`` on [0, 1] pixels). An ``ofasearch`` section adds what timm's format has no key for: the input range,
the model as ofasearch builds it (timm classes such as ``MlpMixer`` included), the weight files'
SHA-256 and the versions that made it.

:func:`load_student` is the one loader (the docs, ``scripts/train_best.py`` and the tests use it):
it returns the model in eval mode and a :class:`StudentTransform` that turns a PIL image or an
image tensor into exactly the input the student saw in training.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ofasearch.errors import SpecError
from ofasearch.models.factory import build_model, kwargs_problem, normalization
from ofasearch.models.weights import load_weights
from ofasearch.utils.files import CorruptFileError, atomic_write, file_problem, file_record
from ofasearch.utils.versions import package_versions

__all__ = [
    "CARD_FILE",
    "INPUT_RANGE",
    "STUDENT_FILE",
    "StudentTransform",
    "load_student",
    "model_card",
    "read_card",
    "save_student",
    "student_pretrained_cfg",
]

CARD_FILE = "config.json"  # timm's name: `timm.create_model("local-dir:FOLDER")` reads it
STUDENT_FILE = "student.safetensors"
INPUT_RANGE = (0.0, 1.0)  # pixels are scaled to this range before mean/std
CARD_FORMAT = 1
# timm's pretrained_cfg keys that describe the architecture (kept from the model's own cfg);
# the preprocessing keys are replaced by what training used, the source keys (url, hub id) dropped
_ARCH_KEYS = ("first_conv", "classifier", "fixed_input_size")


def takes_img_size(model: nn.Module) -> bool:
    """Whether the model's constructor has an ``img_size`` argument (ViTs, Mixers; not CNNs)."""
    try:
        return "img_size" in inspect.signature(type(model)).parameters
    except (TypeError, ValueError):
        return False


def student_pretrained_cfg(
    model: nn.Module,
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    mean_std: tuple[Sequence[float], Sequence[float]] | None = None,
    crop_pct: float | None = None,
    interpolation: str = "bilinear",
) -> dict[str, Any]:
    """The preprocessing the student was scored with, in timm's ``pretrained_cfg`` form:
    ``input_size`` (C, H, W), a bilinear resize, and the model's timm ``mean``/``std`` (averaged
    for grayscale), applied to [0, 1] pixels. The resize is square (``crop_pct`` 1, ``crop_mode``
    squash: no crop), or with ``crop_pct`` (students of ``augment.crop: rrc``, scored as timm
    evaluates) the shorter side to ``input_size / crop_pct`` (by ``interpolation``) and the
    centre cut out.
    ``timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=cfg))`` builds
    the equivalent PIL pipeline. ``mean_std``: the normalisation training used when it was not
    the model's own (``augment.normalize: dataset``)."""
    own = dict(getattr(model, "pretrained_cfg", None) or {})
    mean, std = mean_std if mean_std is not None else normalization(model, in_chans)
    cfg: dict[str, Any] = {k: own[k] for k in _ARCH_KEYS if own.get(k) is not None}
    cfg.update(
        custom_load=False,  # a native timm state dict
        input_size=[in_chans, image_size, image_size],
        interpolation=interpolation,
        crop_pct=1.0 if crop_pct is None else float(crop_pct),
        crop_mode="squash" if crop_pct is None else "center",
        mean=[float(m) for m in mean],
        std=[float(v) for v in std],
        num_classes=num_classes,
    )
    return cfg


def model_card(
    name: str,
    kwargs: dict[str, Any],
    model: nn.Module,
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    files: dict[str, Path] | None = None,
    extra: dict[str, Any] | None = None,
    mean_std: tuple[Sequence[float], Sequence[float]] | None = None,
    crop_pct: float | None = None,
    interpolation: str = "bilinear",
) -> dict[str, Any]:
    """``config.json`` of a student: timm's keys, plus an ``ofasearch`` section (how ofasearch
    builds it, the input range, size and SHA-256 of each file in ``files``, versions, ``extra``)."""
    args: dict[str, Any] = {**kwargs, "num_classes": num_classes, "in_chans": in_chans}
    if takes_img_size(model) and "img_size" not in kwargs:
        args["img_size"] = image_size
    return {
        "architecture": name,
        "num_classes": num_classes,
        "num_features": int(getattr(model, "num_features", 0) or 0),
        "model_args": args,
        "pretrained_cfg": student_pretrained_cfg(
            model,
            num_classes=num_classes,
            in_chans=in_chans,
            image_size=image_size,
            mean_std=mean_std,
            crop_pct=crop_pct,
            interpolation=interpolation,
        ),
        "ofasearch": {
            "format": CARD_FORMAT,
            "model": name,
            "kwargs": kwargs,
            "num_classes": num_classes,
            "in_chans": in_chans,
            "image_size": image_size,
            "input_range": list(INPUT_RANGE),
            "resize": _resize_words(crop_pct, interpolation),
            "files": {fname: file_record(path) for fname, path in (files or {}).items()},
            "versions": package_versions(),
            **(extra or {}),
        },
    }


def _resize_words(crop_pct: float | None, interpolation: str) -> str:
    if crop_pct is None:
        return "bilinear with antialias to input_size (no crop, aspect ratio not kept)"
    return f"{interpolation} with antialias, shorter side to floor(input_size / {crop_pct}), centre crop to input_size"


def save_student(
    folder: str | Path,
    model: nn.Module,
    name: str,
    kwargs: dict[str, Any],
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    extra: dict[str, Any] | None = None,
    more_files: dict[str, Path] | None = None,
    mean_std: tuple[Sequence[float], Sequence[float]] | None = None,
    crop_pct: float | None = None,
    interpolation: str = "bilinear",
) -> Path:
    """Write ``student.safetensors`` and its ``config.json`` (:func:`model_card`) into
    ``folder``; :func:`load_student` (or timm's ``local-dir:``) reads them back. ``more_files``
    (name in the folder -> path) are recorded in the card with their hashes too."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / STUDENT_FILE))
    card = model_card(
        name,
        kwargs,
        model,
        num_classes=num_classes,
        in_chans=in_chans,
        image_size=image_size,
        files={STUDENT_FILE: folder / STUDENT_FILE, **(more_files or {})},
        extra=extra,
        mean_std=mean_std,
        crop_pct=crop_pct,
        interpolation=interpolation,
    )
    return atomic_write(folder / CARD_FILE, json.dumps(card, indent=2))


class StudentTransform:
    """Turn one image (or a batch) into the student's input exactly as its scoring made it: a PIL
    image (converted to the student's channels) or a uint8 tensor in [0, 255], (C, H, W) or
    (N, C, H, W), is resized like the evaluation data (bilinear, antialias, rounded back to
    uint8; with ``crop_pct`` the shorter side to ``image_size / crop_pct`` by ``interpolation``,
    then the centre crop), scaled to [0, 1] and normalised with mean/std. A float tensor is taken as already
    in [0, 1] and the right size."""

    def __init__(
        self,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        crop_pct: float | None = None,
        interpolation: str = "bilinear",
    ) -> None:
        self.image_size = image_size
        self.crop_pct = crop_pct
        self.interpolation = interpolation
        self._eval_cut = None
        if crop_pct is not None:  # timm's eval transform, built as the pipeline builds the one it scores with
            from timm.data import create_transform

            self._eval_cut = create_transform(
                image_size, is_training=False, crop_pct=crop_pct, interpolation=interpolation, normalize=False
            )
        self.in_chans = len(mean)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    @classmethod
    def from_pretrained_cfg(cls, cfg: dict[str, Any]) -> StudentTransform:
        crop_pct = float(cfg["crop_pct"]) if cfg.get("crop_mode") == "center" else None
        interpolation = str(cfg.get("interpolation") or "bilinear")
        return cls(int(cfg["input_size"][-1]), tuple(cfg["mean"]), tuple(cfg["std"]), crop_pct, interpolation)

    def __repr__(self) -> str:
        return (
            f"StudentTransform(resize={self.image_size}x{self.image_size} {self.interpolation}, "
            f"crop_pct={self.crop_pct}, "
            "range=[0, 1], "
            f"mean={[round(float(m), 4) for m in self.mean.flatten()]}, "
            f"std={[round(float(s), 4) for s in self.std.flatten()]})"
        )

    def __call__(self, image: Any) -> torch.Tensor:
        x = self._as_tensor(image)
        batched = x.ndim == 4
        x = x if batched else x.unsqueeze(0)
        if x.shape[1] != self.in_chans:
            raise ValueError(f"image has {x.shape[1]} channel(s); this student takes {self.in_chans}")
        if x.dtype == torch.uint8 and self._eval_cut is not None:
            x = self._eval_cut(x).float() / 255.0
        elif x.dtype == torch.uint8:
            if x.shape[-2:] != (self.image_size, self.image_size):  # as ofasearch.data resizes the data
                x = F.interpolate(
                    x.float(), size=(self.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False
                )
                x = x.round().clamp(0, 255)
            x = x.float() / 255.0
        elif x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x.float(), size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        x = (x.float() - self.mean) / self.std
        return x if batched else x[0]

    def _as_tensor(self, image: Any) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            return image
        if hasattr(image, "convert"):  # a PIL image
            from torchvision.transforms.functional import pil_to_tensor

            return pil_to_tensor(image.convert("L" if self.in_chans == 1 else "RGB"))
        raise TypeError(f"expected a PIL image or a torch tensor, got {type(image).__name__}")


def read_card(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a student folder; a missing or foreign one is a one-line SpecError."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise SpecError(
            [f"{folder}: no {CARD_FILE}; give the output folder of `ofasearch train` (it holds {STUDENT_FILE} and it)"]
        )
    try:
        card = json.loads(path.read_text())
    except ValueError as exc:
        raise SpecError([f"{path}: not valid JSON ({exc})"]) from None
    if not isinstance(card, dict) or "ofasearch" not in card:
        raise SpecError([f"{path}: not written by ofasearch (no 'ofasearch' section)"])
    return card


def inside_folder(folder: Path, name: str | Path, field: str) -> Path:
    """``folder / name`` when it stays inside ``folder`` (symbolic links and ``..`` resolved),
    else a one-line SpecError naming ``field``: a student folder is handed around, and what it
    names must not read files elsewhere."""
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise SpecError([f"{field}: {str(name)!r} is outside the student folder {folder}; only files inside it"])
    return path


def load_student(
    folder: str | Path, *, weights: str = STUDENT_FILE, device: str | torch.device = "cpu"
) -> tuple[nn.Module, StudentTransform]:
    """The trained student of an ``ofasearch train`` output folder (best-epoch weights, or
    ``weights=`` another file there, e.g. ``checkpoints/student_last.safetensors``), in eval mode,
    and the transform that feeds it: ``model(transform(image).unsqueeze(0))``. The weights are
    checked against the SHA-256 recorded when they were written."""
    folder = Path(folder)
    card = read_card(folder)
    info = card["ofasearch"]
    problem = kwargs_problem(info.get("kwargs") or {})
    if problem:
        raise SpecError([f"{folder / CARD_FILE}: ofasearch.{problem}"])
    path = inside_folder(folder, weights, "weights")
    record = info.get("files", {}).get(weights)
    if not path.is_file():
        raise SpecError([f"{path}: no such file"])
    if record:
        problem = file_problem(path, record)
        if problem:
            raise CorruptFileError(path, problem, "restore it, or train again")
    model = build_model(
        info["model"],
        info.get("kwargs") or {},
        num_classes=int(info["num_classes"]),
        in_chans=int(info["in_chans"]),
        image_size=int(info["image_size"]),
    )
    load_weights(model, path)
    return model.to(device).eval(), StudentTransform.from_pretrained_cfg(card["pretrained_cfg"])
