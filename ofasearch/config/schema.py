"""The one YAML schema behind search specs and train configs.

A *train config* (:class:`TrainConfig`, what ``ofasearch train`` runs and ``ofasearch export``
writes) holds one pair and a concrete value of a concrete type for every setting. A *search spec*
(:class:`Spec`) may list several pairs and give any tunable setting as a distribution
(``{low, high, log}`` or ``{choices: [...]}``): its ``distill`` and ``optim`` sections are made
from the train config's by :func:`searchable`, so each setting and its checks are declared once.
Every problem is reported as ``field.path: message`` (see :mod:`ofasearch.errors`), so a typo
never surfaces in the middle of a run.
"""

from __future__ import annotations

import math
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import core_schema

from ofasearch.config.registry import (
    BASELINE_METHODS,
    BASELINE_PRESETS,
    BRANCH_LOSSES,
    LOSSES,
    METHODS,
    OPTIMIZERS,
    RECIPES,
)
from ofasearch.config.registry import DATASETS as DATASET_REGISTRY
from ofasearch.utils.storage import is_uri, uri_problem

__all__ = [
    "AugmentSearchSpec",
    "AugmentSpec",
    "Choices",
    "DataSpec",
    "DistillSearchSpec",
    "DistillSpec",
    "ModelSpec",
    "OptimSearchSpec",
    "OptimSpec",
    "PairSpec",
    "Range",
    "ResourcesSpec",
    "ConfirmSettings",
    "Constraints",
    "SearchSettings",
    "Spec",
    "TeacherRecipe",
    "TrainConfig",
    "Tunable",
    "batch_split_problem",
    "first_rung_after_warmup",
    "searchable",
]

DATASETS: tuple[str, ...] = tuple(DATASET_REGISTRY)
STAGES = (1, 2, 3, 4)
PAPER_PROTOCOL = "paper: val_acc is the TEST accuracy (best over epochs), trained on all of train"
HELD_OUT_PROTOCOL = "held-out validation split of train (test never scored during training)"
# Validation-context key of the function that checks a model name against the installed timm
# (``loading`` passes it; results folders are read without it, see ``check_models``).
MODEL_CHECK = "model_check"
# Keys that train configs written before TrainConfig lost them still carry (best.yaml, exports,
# the trials table's ``config`` column); they meant nothing to ``ofasearch train``.
LEGACY_TRAIN_KEYS = ("search", "storage")
RESIZE_POLICIES = ("squash", "center-crop", "pad")  # data.resize (ofasearch.data.imagefolder.decode)
LATER_DATA_KEYS = ("resize",)  # data keys dumped only when set (see DataSpec)


class Strict(BaseModel):
    """Base of every section: unknown keys are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False, use_attribute_docstrings=True)


class Range(Strict):
    """A continuous (or integer, for integer fields) range to search; ``log`` samples log-uniformly."""

    low: float
    high: float
    log: bool = False


class Choices(Strict):
    """A categorical set of values to search."""

    choices: list[Any] = Field(min_length=1)


Distribution = Range | Choices


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_distribution(value: Any) -> bool:
    return isinstance(value, dict) and ("choices" in value or "low" in value or "high" in value)


def _describe(value: Any) -> str:
    """How an error names a distribution the user wrote."""
    if "choices" in value:
        return f"choices {value['choices']}"
    ends = [value.get(end) for end in ("low", "high")]
    if all(_is_number(end) for end in ends):
        return f"a range {{low: {ends[0]:g}, high: {ends[1]:g}}}"
    return f"a range {value!r}"


@dataclass(frozen=True)
class Tunable:
    """Marks a setting a search may tune, with the rule every value of it must pass.

    As ``Annotated`` metadata on a train-config field it checks the constant. :func:`searchable`
    reads it to let the search spec's field also take a distribution, whose ends (of a range) and
    choices pass the same rule, so a search never samples a value the trainer would reject.
    ``not_searchable`` (a reason) keeps a setting constant in search specs too.
    """

    kind: type
    """what a constant is coerced to and checked as (``object``: no coercion)"""
    check: Callable[[Any], bool] = lambda _v: True
    allowed: str = ""
    range_ok: bool = True
    prepare: Callable[[Any], Any] | None = None
    """applied first, e.g. "1,2,3" -> [1, 2, 3]"""
    not_searchable: str | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self.parse_constant, handler(source))

    def constant(self, value: Any) -> Any:
        """``value`` coerced to ``kind`` (``1`` -> ``1.0``, ``3.0`` -> ``3``) if it passes the rule."""
        if self.kind is float and _is_number(value):
            value = float(value)
        elif self.kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if self.kind in (int, float) and not _is_number(value):
            raise ValueError(f"{value!r} is not a number")
        if self.kind is int and not isinstance(value, int):
            raise ValueError(f"{value!r} is not an integer")
        if self.kind is str and not isinstance(value, str):
            raise ValueError(f"{value!r} is not a string")
        if not self.check(value):
            raise ValueError(f"{value!r} is not allowed; {self.allowed}")
        return value

    def parse_constant(self, value: Any) -> Any:
        """A train config's value: a distribution is an error that says where one comes from."""
        value = self.prepare(value) if self.prepare else value
        if _is_distribution(value):
            raise ValueError(
                f"a train config needs a constant, got {_describe(value)} "
                "(export one from a search with `ofasearch export`)"
            )
        return self.constant(value)

    def parse_searchable(self, value: Any) -> Any:
        """A search spec's value: a constant, a :class:`Range` or :class:`Choices` of constants."""
        value = self.prepare(value) if self.prepare else value
        if not isinstance(value, dict):
            return self.constant(value)
        if self.not_searchable and _is_distribution(value):
            raise ValueError(f"cannot be searched: {self.not_searchable}")
        if "choices" in value:
            choices = Choices.model_validate(value)
            choices.choices = [self.constant(v) for v in choices.choices]
            return choices
        if "low" in value or "high" in value:
            if not self.range_ok:
                raise ValueError(f"a range is not allowed here, use {{choices: [...]}}; {self.allowed}")
            rng = Range.model_validate(value)
            if rng.low > rng.high:
                raise ValueError(f"low {rng.low:g} > high {rng.high:g}")
            if rng.log and rng.low <= 0:
                raise ValueError(f"a log range needs low > 0, got low {rng.low:g}")
            for end in (rng.low, rng.high):  # an integer field's range has integer ends, as Optuna needs
                self.constant(int(end) if self.kind is int and end.is_integer() else end)
            return rng
        raise ValueError(
            f"{value!r} is neither a constant nor a distribution ({{low, high, log}} or {{choices: [...]}})"
        )


def searchable(section: type[BaseModel], name: str) -> type[BaseModel]:
    """The search-spec version of a train-config section: every :class:`Tunable` field of type
    ``T`` becomes ``T | Range | Choices`` (``T | Choices`` where ranges make no sense), with the
    same default; the other fields are kept as they are."""
    fields: dict[str, Any] = {}
    for key, field in section.model_fields.items():
        found = _tunable_of(field)
        if found is None:
            fields[key] = (field.annotation, field)
            continue
        tunable, value_type, optional = found
        if tunable.not_searchable:
            searched: Any = value_type
        elif tunable.range_ok:
            searched = value_type | Range | Choices
        else:
            searched = value_type | Choices
        annotation: Any = Annotated[searched, BeforeValidator(tunable.parse_searchable)]
        if optional:
            annotation = annotation | None
        fields[key] = (annotation, Field(default=field.default, description=field.description))
    doc = f"{section.__doc__} In a search spec, each tunable value may be a Range or Choices."
    model = create_model(name, __base__=Strict, __doc__=doc, **fields)
    model.__module__ = __name__
    return model


def _tunable_of(field: FieldInfo) -> tuple[Tunable, Any, bool] | None:
    """The field's :class:`Tunable` marker, its value type and whether ``None`` is allowed."""
    for meta in field.metadata:
        if isinstance(meta, Tunable):
            return meta, field.annotation, False
    args = typing.get_args(field.annotation)
    if typing.get_origin(field.annotation) in (Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        if typing.get_origin(inner) is Annotated:
            value_type, *metadata = typing.get_args(inner)
            for meta in metadata:
                if isinstance(meta, Tunable):
                    return meta, value_type, True
    return None


def _positive(v: Any) -> bool:
    return _is_number(v) and v > 0 and math.isfinite(v)


def _non_negative(v: Any) -> bool:
    return _is_number(v) and v >= 0 and math.isfinite(v)


def _stage_list(v: Any) -> bool:
    return (
        isinstance(v, list)
        and all(isinstance(s, int) and not isinstance(s, bool) and s in STAGES for s in v)
        and sorted(set(v)) == v
    )


def _parse_stages(value: Any) -> Any:
    """Stages are a sorted list of 1..4, or ``{choices: [[...], ...]}``; ``"1,2,3"`` also works."""
    if isinstance(value, str):
        value = [int(s) for s in value.replace(" ", "").split(",") if s]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    return value


def _eps_value(v: Any) -> bool:
    if isinstance(v, list):
        return len(v) > 0 and all(_positive(x) for x in v)
    return _positive(v)


def _checked(value: Any, names: typing.Iterable[str], what: str) -> Any:
    if value not in tuple(names):
        raise ValueError(f"{what} {value!r} is not allowed (allowed: {', '.join(names)})")
    return value


def _one_of(names: typing.Iterable[str]) -> Callable[[Any], bool]:
    allowed = tuple(names)
    return lambda v: v in allowed


PositiveFloat = Annotated[float, Tunable(float, _positive, "must be > 0")]
NonNegativeFloat = Annotated[float, Tunable(float, _non_negative, "must be >= 0")]
UnitFloat = Annotated[float, Tunable(float, lambda v: _non_negative(v) and v < 1, "must be >= 0 and < 1")]
CropName = Annotated[str, Tunable(str, _one_of(("pad", "rrc")), "allowed: pad, rrc")]
NormalizeName = Annotated[str, Tunable(str, _one_of(("model", "dataset")), "allowed: model, dataset")]
ScheduleName = Annotated[str, Tunable(str, _one_of(("cosine", "step")), "allowed: cosine, step")]
StepOn = Annotated[str, Tunable(str, _one_of(("update", "epoch")), "allowed: update, epoch")]
Interpolation = Annotated[str, Tunable(str, _one_of(("bilinear", "bicubic")), "allowed: bilinear, bicubic")]
CropShare = Annotated[float, Tunable(float, lambda v: _positive(v) and v <= 1, "must be > 0 and <= 1")]
AutoAugment = Annotated[
    str,
    Tunable(
        str,
        lambda v: (
            isinstance(v, str) and v.split("-")[0] in ("rand", "augmix", "original", "originalr", "v0", "v0r", "3a")
        ),
        "a timm auto_augment string such as rand-m9-mstd0.5-inc1, augmix-m5-w4-d2, original, v0 or 3a",
    ),
]
RecipeName = Annotated[
    str, BeforeValidator(lambda v: _checked(v, RECIPES, "recipe")), Field(description="a name in RECIPES")
]
# section -> its field names, for PairSpec.settings (filled once the sections are defined below)
SECTION_FIELDS: dict[str, tuple[str, ...]] = {}
PositiveInt = Annotated[int, Tunable(int, lambda v: v >= 1, "must be an integer >= 1")]
NonNegativeInt = Annotated[int, Tunable(int, lambda v: v >= 0, "must be an integer >= 0")]
MethodName = Annotated[str, Tunable(str, _one_of(METHODS), f"allowed: {', '.join(METHODS)}")]
LossName = Annotated[str, Tunable(str, _one_of(LOSSES), f"allowed: {', '.join(LOSSES)}")]
BranchLossName = Annotated[
    str,
    Tunable(
        str,
        _one_of(BRANCH_LOSSES),
        f"allowed: {', '.join(BRANCH_LOSSES)} (an exit branch has no DKD: its warm-up and target split are "
        "defined for the final logits)",
    ),
]
Switch = Annotated[bool, Tunable(bool, lambda v: isinstance(v, bool), "true or false", False)]
OptimizerName = Annotated[str, Tunable(str, _one_of(OPTIMIZERS), f"allowed: {', '.join(OPTIMIZERS)}")]
StageList = Annotated[
    list[int],
    Tunable(
        list,
        _stage_list,
        "stages are a sorted list of distinct values in 1..4 ([]: no exit branches)",
        False,
        _parse_stages,
    ),
]
EpsValue = Annotated[
    float | list[float],
    Tunable(object, _eps_value, "eps must be > 0 (one value, or one per stage plus one for the final logits)"),
]
# ASHA's max_t: a search varies how long a trial runs, never the budget itself
Budget = Annotated[
    int,
    Tunable(
        int,
        lambda v: v >= 1,
        "must be an integer >= 1",
        not_searchable="it is the full budget (ASHA's max_t); give one value",
    ),
]


class DataSpec(Strict):
    """Where the images come from and how they are split."""

    dataset: Literal[DATASETS]
    """the registry's names"""
    root: str = "auto"
    image_size: int | None = Field(default=None, ge=4, le=1024)
    train_subset: int | None = Field(default=None, ge=10)
    val_fraction: float | None = Field(default=None, ge=0, lt=1)
    """None: 0.1, unless val_size is given. 0: the paper's protocol (train on all of train, score every epoch on the
    test split and report the best): comparable with the paper's tables, but not a held-out estimate, and labelled
    as such in every output
    """
    val_size: int | None = Field(default=None, ge=10)
    """a fixed number of validation images, held out before train_subset applies: how finely the search's accuracies
    resolve does not then depend on how much it trains on
    """
    augment: bool = True
    resize: Literal[RESIZE_POLICIES] | None = None
    """how images that are not square reach image_size x image_size (imagefolder; the built-in datasets are square):
    squash (stretch, the default), center-crop (shorter side to size, cut the middle) or pad (longer side to size,
    black borders). None: squash.
    """

    @model_serializer(mode="wrap")
    def _later_keys_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Keys added after content hashes of data specs were first kept (teacher store, logit
        cache) are dumped only when set: an older spec keeps its hash, its teacher and cache."""
        data = handler(self)
        for key in LATER_DATA_KEYS:
            if isinstance(data, dict) and data.get(key) is None:
                data.pop(key, None)
        return data

    @property
    def paper_protocol(self) -> bool:
        """Whether scores are taken on the test split (``val_fraction: 0``, as the paper reports)."""
        return self.val_fraction == 0

    @property
    def protocol(self) -> str:
        """How outputs label the scores."""
        return PAPER_PROTOCOL if self.paper_protocol else HELD_OUT_PROTOCOL

    @model_validator(mode="after")
    def _one_val_rule(self) -> Self:
        if self.val_size is not None and self.val_fraction is not None:
            raise ValueError(f"give val_size ({self.val_size}) or val_fraction ({self.val_fraction}), not both")
        return self


class TeacherRecipe(Strict):
    """How ``checkpoint: auto`` trains a teacher once (the result is cached by content hash)."""

    epochs: int = Field(default=4, ge=1)
    optimizer: Literal[OPTIMIZERS] = "adamw"
    """the registry's names"""
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    batch_size: int = Field(default=128, ge=1)


class ModelSpec(Strict):
    """A timm model: a registered name (``resnet18``) or a timm model class (``MlpMixer``)."""

    model: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """the checkpoint file's SHA-256 (`ofasearch export` pins the teacher a search used by content)"""
    pretrained: bool = False
    recipe: TeacherRecipe | None = None
    """how a teacher is trained once (``checkpoint: auto``) or fine-tuned from ``pretrained: true`` (given: the
    pretrained weights are fine-tuned on the data); None: the defaults, or as it is
    """

    @model_validator(mode="after")
    def _known_model(self, info: ValidationInfo) -> ModelSpec:
        check = (info.context or {}).get(MODEL_CHECK)
        message = check(self.model) if check is not None else None
        if message:
            raise ValueError(message)
        if self.pretrained and self.checkpoint not in (None, "auto"):
            raise ValueError("give either pretrained: true or checkpoint: PATH, not both")
        if self.sha256 is not None and self.checkpoint in (None, "auto"):
            raise ValueError("sha256 pins a checkpoint file: give checkpoint: PATH with it")
        if self.recipe is not None and self.checkpoint not in (None, "auto"):
            raise ValueError(
                f"recipe trains a teacher (checkpoint: auto) or fine-tunes a pretrained one; the file "
                f"{self.checkpoint!r} is used as it is: remove recipe or checkpoint"
            )
        if self.pretrained and self.recipe is not None:
            self.checkpoint = "auto"  # fine-tuned once on the data and kept like a trained teacher
        return self

    @property
    def training_recipe(self) -> TeacherRecipe:
        """The recipe ``checkpoint: auto`` trains (or fine-tunes) with: the given one or the defaults."""
        return self.recipe or TeacherRecipe()

    @property
    def fine_tunes(self) -> bool:
        """ImageNet (hub) weights fine-tuned on the data before they teach, as the paper's teachers."""
        return self.pretrained and self.checkpoint == "auto"

    @property
    def label(self) -> str:
        """A short name for tables: the model name plus its kwargs."""
        if not self.kwargs:
            return self.model
        args = ",".join(f"{k}={v}" for k, v in sorted(self.kwargs.items()))
        return f"{self.model}({args})"


class PairSpec(Strict):
    """A teacher and the student it distills into.

    ``recipe`` (a name in ``RECIPES``) overrides the document's for this pair; ``settings`` are
    this pair's own values (dotted paths, e.g. ``distill.ofa_weight: 0.1``): over the spec's
    constants, and for a value the spec searches, where this pair's first (enqueued) trial and
    its baselines start. Values common to every pair are moved to the spec's sections when it
    is read; what differs stays here."""

    teacher: ModelSpec
    student: ModelSpec
    recipe: RecipeName | None = None
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("settings")
    @classmethod
    def _known_paths(cls, settings: dict[str, Any]) -> dict[str, Any]:
        for path in settings:
            section, _, key = path.partition(".")
            fields = SECTION_FIELDS.get(section)
            if fields is None or key not in fields:
                raise ValueError(
                    f"{path!r} is not a setting; give section.key with section one of {', '.join(SECTION_FIELDS)}"
                )
        return settings

    @model_validator(mode="before")
    @classmethod
    def _teacher_defaults_to_auto(cls, data: Any) -> Any:
        """A teacher without weights would teach noise: unless pretrained, train one (``auto``)."""
        if isinstance(data, dict) and isinstance(data.get("teacher"), dict):
            teacher = dict(data["teacher"])
            if not teacher.get("pretrained"):
                teacher.setdefault("checkpoint", "auto")
            data = {**data, "teacher": teacher}
        return data

    @property
    def label(self) -> str:
        return f"{self.teacher.label} -> {self.student.label}"


class DistillSpec(Strict):
    """How the student learns from the teacher: a composition of loss terms (``method: ofa``), or
    one of the baselines (``method: kd | dkd | dist | none``).

    ``method: ofa`` is the OFA-KD frame: ``gt_weight * CE + kd_weight * logit_loss(final logits) +
    ofa_weight * sum over stages of branch_loss(exit branch logits)``. The paper's OFA-KD is
    ``logit_loss: ofa``, ``branch_loss: ofa``; ``stages: []`` has no branches, so every baseline is
    a point of this space too. Each loss reads its own settings (``config.registry.LOSSES``).
    """

    method: MethodName = "ofa"
    logit_loss: LossName | None = None
    """the loss on the final logits: ofa | kd | dkd | dist; None: the method's own (ofa for ofa)"""
    branch_loss: BranchLossName = "ofa"
    """the loss of each exit branch (method ofa, stages not []): ofa | kd | dist"""
    logit_standardize: Switch = False
    """logit standardization (Sun et al., CVPR 2024) in front of each term's loss: z-scored logits"""
    branch_standardize: Switch = False
    stages: StageList | None = None
    """None: every stage the student has (1-4 for most models); []: none"""
    temperature: PositiveFloat = 1.0
    """of the ofa and kd losses"""
    eps: EpsValue = 1.0
    gt_weight: NonNegativeFloat = 1.0
    kd_weight: NonNegativeFloat = 1.0
    """the final-logit term's weight"""
    ofa_weight: NonNegativeFloat = 1.0
    """the exit-branch terms' weight"""
    dkd_alpha: NonNegativeFloat = 1.0
    """the dkd loss (Zhao et al., CVPR 2022; its CIFAR-100 setting): alpha * TCKD + beta * NCKD at its own temperature,
    its weight ramped up linearly over dkd_warmup_epochs (None: the paper's share of the budget, 20 of 240 epochs,
    at least 1)
    """
    dkd_beta: NonNegativeFloat = 8.0
    dkd_temperature: PositiveFloat = 4.0
    dkd_warmup_epochs: NonNegativeInt | None = None
    dist_beta: NonNegativeFloat = 1.0
    """the dist loss (Huang et al., NeurIPS 2022; the paper's and its code's defaults): T^2 * (beta * inter-class +
    gamma * intra-class relation loss)
    """
    dist_gamma: NonNegativeFloat = 1.0
    dist_temperature: PositiveFloat = 1.0
    teacher_cache: Annotated[
        Literal["auto", "on", "off"], BeforeValidator(lambda v: {True: "on", False: "off"}.get(v, v))
    ] = "auto"
    """YAML reads a bare on/off as true/false: accept both spellings"""
    cache_views: int | None = Field(default=None, ge=1)
    """None: one view per epoch (at most 32)"""

    @model_validator(mode="after")
    def _logit_loss_fits_method(self) -> Self:
        if self.logit_loss is not None and self.method not in ("ofa", self.logit_loss):
            raise ValueError(
                f"logit_loss: {self.logit_loss!r} with method {self.method!r}: a baseline's loss is its method; "
                "compose losses with method: ofa"
            )
        return self

    @property
    def logit_loss_name(self) -> str | None:
        """The loss on the final logits (None: the student alone)."""
        if self.method == "none":
            return None
        return self.logit_loss or self.method

    @property
    def has_branches(self) -> bool:
        """Whether exit branches are trained (``stages`` None means every stage)."""
        return METHODS[self.method].branches and self.stages != []

    def active_settings(self) -> set[str]:
        """The distill settings this config's terms read: what a search suggests for it and what
        its table row shows (the others are left at their defaults and mean nothing here)."""
        active = {"method", "gt_weight"}
        logit = self.logit_loss_name
        if logit is not None:
            active |= {"logit_standardize", "kd_weight", *LOSSES[logit].params.values()}
            if self.method == "ofa":
                active.add("logit_loss")
        if METHODS[self.method].branches:
            active.add("stages")
        if self.has_branches:
            active |= {"branch_loss", "branch_standardize", "ofa_weight", *LOSSES[self.branch_loss].params.values()}
        if "dkd_temperature" in active:
            active.add("dkd_warmup_epochs")
        return active

    @property
    def composition(self) -> str:
        """A short name of what trains the student: ``dist``, ``ofa + ofa@1,2,3,4``, ``dist~ + kd@3,4``
        (``~``: logit standardization), ``none`` for the student alone."""
        logit = self.logit_loss_name
        if logit is None:
            return "none"
        text = logit + ("~" if self.logit_standardize else "")
        if self.has_branches:
            where = "all" if self.stages is None else ",".join(str(s) for s in self.stages)
            text += f" + {self.branch_loss}{'~' if self.branch_standardize else ''}@{where}"
        return text


class OptimSpec(Strict):
    """Optimiser and schedule of one training; ``epochs`` is the full budget (ASHA's ``max_t``)."""

    name: OptimizerName = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.05
    momentum: NonNegativeFloat = 0.9
    batch_size: PositiveInt = 128
    """the GLOBAL batch: split evenly across DDP workers"""
    epochs: Budget = 5
    warmup_epochs: NonNegativeInt = 1
    clip_grad: NonNegativeFloat = 5.0
    schedule: ScheduleName = "cosine"
    """the lr schedule after the warm-up, built by timm's create_scheduler_v2: cosine to min_lr, or step (the lr times
    decay_rate every decay_epochs, as the paper's ImageNet CNN runs)
    """
    min_lr: NonNegativeFloat = 0.0
    """where the cosine schedule ends"""
    decay_epochs: PositiveFloat = 30.0
    """step: epochs between decays"""
    decay_rate: UnitFloat = 0.1
    """step: the lr's factor at each decay"""
    warmup_lr: NonNegativeFloat | None = None
    """where the linear warm-up starts; None: lr / (warm-up steps + 1), so the first step learns"""
    warmup_prefix: Switch = True
    """true: the warm-up comes before the schedule (whose length is epochs - warmup_epochs); false (timm train.py's
    default): the schedule starts at epoch 0 and the warm-up overrides it
    """
    step_on: StepOn = "update"
    """when the lr changes: after every update (smooth) or at each epoch's start (timm train.py)"""
    ema_decay: UnitFloat = 0.0
    """> 0: timm's ModelEmaV3 of the student, which is then scored and shipped"""
    amp: Annotated[
        Literal["auto", "bf16", "fp16", "off"], BeforeValidator(lambda v: {True: "auto", False: "off"}.get(v, v))
    ] = "auto"
    """mixed precision, CUDA only (a CPU trains in float32 whatever this says): auto is float32 up to 64 px (bf16
    measured slower there) and above it bf16 where the GPU supports it, else fp16 with loss scaling
    (ofasearch.training.speed); true/false from older specs mean auto/off
    """
    compile: Literal["auto", "on", "off"] = "auto"
    """torch.compile of the student and exit branches (and a live teacher): auto compiles when the run's remaining
    steps repay the compile time (ofasearch.training.speed)
    """
    data_on_device: Literal["auto", "on", "off"] = "auto"
    """the train set and its teacher-logit cache on the training device, augmented there in batch: auto on CUDA when
    they take at most a quarter of its free memory (ofasearch.training.resident)
    """


class AugmentSpec(Strict):
    """Training augmentation and label regularisation (timm's parts), replayable per (sample,
    view) so the teacher-logit cache stays exact. The defaults are ofasearch's own pipeline:
    a random crop of the stored images with zero padding + flip, no mixing, plain labels."""

    crop: CropName = "pad"
    """pad: crop of the image padded by 1/8 (+ flip); rrc: timm's RandomResizedCrop (+ flip) from the stored images to
    data.image_size, then the other timm transforms (create_transform)
    """
    auto_augment: AutoAugment | None = None
    """a timm policy string, e.g. rand-m9-mstd0.5-inc1"""
    color_jitter: NonNegativeFloat = 0.0
    re_prob: UnitFloat = 0.0
    """timm RandomErasing (pixel mode), after normalisation"""
    mixup: NonNegativeFloat = 0.0
    """Beta(alpha, alpha) of timm's Mixup; 0: off"""
    cutmix: NonNegativeFloat = 0.0
    """Beta(alpha, alpha) of timm's CutMix; 0: off"""
    label_smoothing: UnitFloat = 0.0
    normalize: NormalizeName = "model"
    """model: each model's own timm mean/std; dataset: the dataset's (data registry), for both models"""
    eval_crop_pct: CropShare = 0.875
    """how crop: rrc runs are scored (timm's eval transform): the shorter side to image_size / eval_crop_pct (256 for
    224 at 0.875), resized with eval_interpolation, the centre kept; the paper's code takes both from the student's
    timm config (resnet18 0.875 bilinear, DeiT and Swin 0.9 bicubic)
    """
    eval_interpolation: Interpolation = "bilinear"

    @model_validator(mode="after")
    def _timm_transforms_need_rrc(self) -> Self:
        uses = [k for k in ("auto_augment", "color_jitter", "re_prob") if getattr(self, k) not in (None, 0.0)]
        if uses and self.crop == "pad":
            raise ValueError(f"{', '.join(uses)} need crop: rrc (timm's create_transform pipeline)")
        return self

    @property
    def mixes(self) -> bool:
        """Whether images and labels are mixed (mixup or cutmix): labels become soft."""
        return float(self.mixup) > 0 or float(self.cutmix) > 0


def batch_split_problem(batch_size: Any, workers: int, where: str = "optim.batch_size") -> str | None:
    """Why ``batch_size`` (a constant, or every choice / range end of a search) cannot be split
    evenly over ``workers`` DDP workers; None when it can. The batch is global, so a config
    searched on one worker trains the same on several."""
    if workers <= 1:
        return None
    if isinstance(batch_size, Range):
        return (
            f"{where}: a range cannot be split over {workers} workers; give {{choices: [...]}} of "
            f"multiples of {workers}"
        )
    values = batch_size.choices if isinstance(batch_size, Choices) else [batch_size]
    bad = [v for v in values if int(v) % workers]
    if bad:
        return (
            f"{where}: {bad[0]} is not divisible by the {workers} workers (the batch is global: each "
            f"worker takes batch_size / workers); use a multiple of {workers}"
        )
    return None


DistillSearchSpec = searchable(DistillSpec, "DistillSearchSpec")
OptimSearchSpec = searchable(OptimSpec, "OptimSearchSpec")
AugmentSearchSpec = searchable(AugmentSpec, "AugmentSearchSpec")
SEARCHABLE_SECTIONS = ("distill", "optim", "augment")
SECTION_FIELDS.update(
    {
        "distill": tuple(DistillSpec.model_fields),
        "optim": tuple(OptimSpec.model_fields),
        "augment": tuple(AugmentSpec.model_fields),
    }
)


class ConfirmSettings(Strict):
    """After the search: the ``top_k`` best distinct full-budget configs and every pair's baselines
    are trained again until each has ``seeds`` runs (the search's own run is the first), so the
    winner and its gains are means over seeds with an interval, not one lucky run."""

    top_k: int = Field(default=3, ge=1)
    seeds: int = Field(default=3, ge=2)


def _baseline_list(value: Any) -> Any:
    """``true`` (the spelling before methods could be chosen) is every baseline, ``false`` none;
    a method named twice is an error."""
    if value is True or value is False:
        return list(BASELINE_METHODS) if value else []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        twice = sorted({m for m in value if isinstance(m, str) and value.count(m) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} given twice")
    return value


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def _duration(value: Any) -> Any:
    """Seconds from a number or a duration such as ``90s``, ``30m``, ``2h`` or ``1h30m``."""
    if not isinstance(value, str):
        return value
    match = _DURATION.match(value)
    if not value.strip() or match is None or not any(match.groups()):
        raise ValueError(f"{value!r} is not a duration; allowed: seconds (e.g. 600) or e.g. 90s, 30m, 2h, 1h30m")
    hours, minutes, seconds = (float(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


class Constraints(Strict):
    """Limits every student must meet to be searched at all (each optional), measured once at
    plan time on the trial device type (``ofasearch.search.plan``): ``max_params`` counts the
    deployed student's own parameters (exit branches are training-only and not counted),
    ``max_flops`` its forward FLOPs per image, ``max_latency_ms`` the median eval forward at
    batch 1 and the data's image size."""

    max_params: int | None = Field(default=None, gt=0)
    max_latency_ms: float | None = Field(default=None, gt=0)
    max_flops: int | None = Field(default=None, gt=0)

    def limits(self) -> dict[str, float]:
        """The limits given, by field name."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class SearchSettings(Strict):
    """Ray Tune settings of a search."""

    num_samples: int = Field(default=8, ge=1)
    grace_epochs: int | None = Field(default=None, ge=1)
    """ASHA's first rung. None: the first epoch after the warm-up (see Spec.first_rung_after_warmup)"""
    reduction_factor: int = Field(default=3, ge=2)
    max_concurrent: int = Field(default=2, ge=1)
    baselines: Annotated[list[Literal[BASELINE_METHODS]], BeforeValidator(_baseline_list)] = Field(
        default_factory=lambda: list(BASELINE_METHODS)
    )
    """per pair, at full budget with the pair's defaults; true: all of them, false or []: none type: ignore[valid-type]
    """
    baseline_preset: Literal[tuple(BASELINE_PRESETS)] = "authors"
    """the settings the baselines train with: each method's authors' (per dataset) or the OFA paper's type:
    ignore[valid-type]
    """
    searcher: Literal["tpe", "random"] = "tpe"
    startup_trials: int | None = Field(default=None, ge=0)
    """trials TPE draws at random before it models the results (not counting the paper defaults); None: the rule in
    ofasearch.search.searcher.default_startup_trials
    """
    confirm: ConfirmSettings | None = None
    warm_start: str | None = None
    """a finished search's folder whose trials the new study starts from (ofasearch.search.warm_start)"""
    constraints: Constraints | None = None
    """students that cannot meet these are dropped before any teacher trains (ofasearch.search.plan)"""
    trial_timeout: Annotated[float | None, BeforeValidator(_duration)] = Field(default=None, gt=0)
    """seconds (or 90s, 30m, 2h): a trial running longer ends as an error ("timed out after ...") and the search goes
    on, so a hung step (a dead network mount, a deadlocked collective) never holds it. None: no limit
    """


class ResourcesSpec(Strict):
    """What one trial (or ``ofasearch train``) runs on."""

    workers_per_trial: int = Field(default=1, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)
    backend: Literal["auto", "local", "ray-train"] = "auto"

    @field_validator("gpus_per_worker")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        # Ray counts a fraction of one GPU (several trials packed on it) or whole GPUs, never 1.5
        if v > 1 and v != int(v):
            raise ValueError(f"{v:g} is not allowed: a fraction of one GPU (e.g. 0.25, 0.5) or a whole number")
        return v

    @model_validator(mode="after")
    def _local_is_one_process(self) -> ResourcesSpec:
        if self.backend == "local" and self.workers_per_trial > 1:
            raise ValueError(
                f"workers_per_trial: {self.workers_per_trial} needs backend ray-train (or auto); "
                "the local backend trains in one process"
            )
        return self


class _Document(Strict):
    """What search specs and train configs share: a name, a seed, the data and the pairs.

    ``teachers: [...]`` with ``students: [...]`` is shorthand for their product, expanded before
    validation, so a parsed document always has a non-empty ``pairs`` and nothing else to look at.
    """

    name: str = Field(default="ofasearch", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    recipe: RecipeName = "default"
    """a training recipe (ofasearch.config.registry.RECIPES) for every pair without its own"""
    data: DataSpec
    pairs: list[PairSpec]

    @model_validator(mode="before")
    @classmethod
    def _expand_teachers_times_students(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        teachers, students = data.pop("teachers", None), data.pop("students", None)
        if teachers is not None or students is not None:
            if data.get("pairs") is not None:
                raise ValueError("give either pairs or teachers + students, not both")
            if not (isinstance(teachers, list) and teachers and isinstance(students, list) and students):
                raise ValueError("teachers and students must both be non-empty lists")
            data["pairs"] = [{"teacher": _auto_teacher(t), "student": s} for t in teachers for s in students]
        if data.get("pairs") is None:
            data["pairs"] = []  # reported by the field check below, beside any other problem
        return _apply_recipes(data)

    @field_validator("pairs")
    @classmethod
    def _at_least_one_pair(cls, pairs: list[PairSpec]) -> list[PairSpec]:
        if not pairs:
            raise ValueError("at least one teacher/student pair is needed")
        return pairs

    def searched_values(self) -> dict[str, Distribution]:
        """Every value given as a distribution, keyed by its dotted path (``distill.eps``)."""
        found: dict[str, Distribution] = {}
        for section in SEARCHABLE_SECTIONS:
            for key, value in getattr(self, section):
                if isinstance(value, (Range, Choices)):
                    found[f"{section}.{key}"] = value
        return found

    def resolve_paths(self, base: Path) -> Self:
        """Make ``data.root`` and checkpoint paths absolute (Ray trials chdir)."""
        doc = self.model_copy(deep=True)
        if doc.data.root != "auto":
            doc.data.root = _absolute(doc.data.root, base)
        for pair in doc.pairs:
            for m in (pair.teacher, pair.student):
                if m.checkpoint not in (None, "auto"):
                    m.checkpoint = _absolute(m.checkpoint, base)
        return doc

    def to_yaml(self) -> str:
        """The document as YAML that parses back to an equal one."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


def first_rung_after_warmup(epochs: int, warmup: Any) -> int:
    """The earliest ASHA grace period whose rung is not inside the learning-rate warm-up: one
    epoch after the longest warm-up a spec can draw (``warmup``: a constant, a range or choices,
    as parsed or as raw YAML), at most the full budget. During the warm-up every trial scores
    about the same, so a rung there would stop trials at random."""
    if isinstance(warmup, (Range, Choices)):
        warmup = warmup.model_dump()
    if isinstance(warmup, dict):
        ends = warmup.get("choices") or [warmup.get("high", 0)]
        longest = max(int(w) for w in ends)
    else:
        longest = int(warmup)
    return min(int(epochs), longest + 1)


def _apply_recipes(data: dict[str, Any]) -> dict[str, Any]:
    """Fill the values a document does not give from each pair's recipe (its own, else the
    document's) and settings. A value every pair agrees on goes into the document's section; one
    that differs between pairs (or that the document itself searches) stays in the pair's
    ``settings``. The document's own values win over recipes; pair settings over both. Reading
    the result again changes nothing (every value is then given)."""
    pairs = data.get("pairs")
    if not isinstance(pairs, list) or not pairs or not all(isinstance(p, dict) for p in pairs):
        return data  # reported by the field checks
    given = {
        f"{section}.{key}"
        for section in SEARCHABLE_SECTIONS
        if isinstance(data.get(section), dict)
        for key in data[section]
    }
    default = data.get("recipe", "default")
    wanted: list[dict[str, Any]] = []
    for pair in pairs:
        name = pair.get("recipe") or default
        recipe = RECIPES.get(name, {}) if isinstance(name, str) else {}  # a bad name is reported by its field
        values = {path: value for path, value in recipe.items() if path not in given}
        settings = pair.get("settings")
        wanted.append({**values, **(settings if isinstance(settings, dict) else {})})
    shared = {
        path: value
        for path, value in wanted[0].items()
        if path not in given and all(path in w and w[path] == value for w in wanted[1:])
    }
    data = {**data, "pairs": []}
    for section in {path.split(".", 1)[0] for path in shared}:
        if data.get(section) is not None and not isinstance(data[section], dict):
            return {**data, "pairs": pairs}  # reported by the section's check
        data[section] = dict(data.get(section) or {})
    for path, value in shared.items():
        section, key = path.split(".", 1)
        data[section][key] = value
    for pair, values in zip(pairs, wanted, strict=True):
        own = {path: value for path, value in values.items() if path not in shared}
        data["pairs"].append({**pair, "settings": own} if own or "settings" in pair else pair)
    return data


def _auto_teacher(model: Any) -> Any:
    """A teacher of ``teachers:`` without weights is trained once (``checkpoint: auto``)."""
    if isinstance(model, dict) and model.get("checkpoint") is None and not model.get("pretrained"):
        return {**model, "checkpoint": "auto"}
    return model


def _absolute(path: str, base: Path) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base / p).resolve())


class Spec(_Document):
    """A search spec: several pairs, distributions allowed, plus where and how to search."""

    distill: DistillSearchSpec = Field(default_factory=DistillSearchSpec)
    optim: OptimSearchSpec = Field(default_factory=OptimSearchSpec)
    augment: AugmentSearchSpec = Field(default_factory=AugmentSearchSpec)
    search: SearchSettings = Field(default_factory=SearchSettings)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    storage: str = "./ofasearch_results"

    @field_validator("storage")
    @classmethod
    def _a_path_or_uri(cls, storage: str) -> str:
        problem = uri_problem(storage)
        if problem:
            raise ValueError(problem)
        return storage

    @model_validator(mode="after")
    def _batch_splits_over_workers(self) -> Spec:
        workers = self.resources.workers_per_trial
        problem = batch_split_problem(self.optim.batch_size, workers)
        for i, pair in enumerate(self.pairs):
            if problem is None and "optim.batch_size" in pair.settings:
                where = f"pairs[{i}].settings.optim.batch_size"
                problem = batch_split_problem(pair.settings["optim.batch_size"], workers, where)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _one_budget(self) -> Spec:
        budgets = {pair.settings["optim.epochs"] for pair in self.pairs if "optim.epochs" in pair.settings}
        if budgets:
            raise ValueError(
                f"optim.epochs: the pairs' recipes or settings give different budgets {sorted(budgets)}; "
                "a search has one (ASHA's max_t): set optim.epochs"
            )
        return self

    @model_validator(mode="after")
    def _grace_within_budget(self) -> Spec:
        grace, epochs = self.search.grace_epochs, self.optim.epochs
        if grace is None:  # a parsed spec always holds the grace period it runs with
            self.search.grace_epochs = self.first_rung_after_warmup()
        elif grace > epochs:
            raise ValueError(f"search.grace_epochs: {grace} is not allowed; must be <= optim.epochs ({epochs})")
        return self

    def first_rung_after_warmup(self) -> int:
        """See :func:`first_rung_after_warmup`; the longest warm-up of any pair (a pair's recipe
        or settings may give its own)."""
        rungs = [first_rung_after_warmup(self.optim.epochs, self.optim.warmup_epochs)]
        for pair in self.pairs:
            if "optim.warmup_epochs" in pair.settings:
                rungs.append(first_rung_after_warmup(self.optim.epochs, pair.settings["optim.warmup_epochs"]))
        return max(rungs)

    def resolve_paths(self, base: Path) -> Self:
        """Make ``storage``, ``data.root`` and checkpoint paths absolute (Ray trials chdir)."""
        spec = super().resolve_paths(base)
        spec.storage = spec.storage if is_uri(spec.storage) else _absolute(spec.storage, base)
        if spec.search.warm_start is not None and not is_uri(spec.search.warm_start):
            spec.search.warm_start = _absolute(spec.search.warm_start, base)
        return spec


class TrainConfig(_Document):
    """A train config: exactly one pair and a concrete value for every setting (what
    ``ofasearch export`` writes and ``ofasearch train`` runs)."""

    distill: DistillSpec = Field(default_factory=DistillSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

    @model_validator(mode="before")
    @classmethod
    def _drop_legacy_keys(cls, data: Any) -> Any:
        """Configs from earlier versions carry ``search`` and ``storage``: they still load."""
        if isinstance(data, dict) and any(key in data for key in LEGACY_TRAIN_KEYS):
            data = {k: v for k, v in data.items() if k not in LEGACY_TRAIN_KEYS}
        return data

    @model_validator(mode="after")
    def _batch_splits_over_workers(self) -> TrainConfig:
        problem = batch_split_problem(self.optim.batch_size, self.resources.workers_per_trial)
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("pairs")
    @classmethod
    def _exactly_one_pair(cls, pairs: list[PairSpec]) -> list[PairSpec]:
        if len(pairs) > 1:
            raise ValueError(f"a train config holds exactly one pair, got {len(pairs)}")
        return pairs

    @property
    def pair(self) -> PairSpec:
        """The one teacher/student pair."""
        return self.pairs[0]
