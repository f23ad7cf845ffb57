"""The one YAML schema behind search specs and train configs.

A *search spec* may list several pairs and use distributions (``{low, high, log}`` or
``{choices: [...]}``) for any tunable value; a *train config* is the same document with exactly
one pair and constants only. Every problem is reported as ``field.path: message`` (see
:mod:`ofasearch.errors`), so a typo never surfaces in the middle of a run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator

__all__ = [
    "Choices",
    "DataSpec",
    "DistillSpec",
    "ModelSpec",
    "OptimSpec",
    "PairSpec",
    "Range",
    "ResourcesSpec",
    "SearchSettings",
    "Spec",
    "TeacherRecipe",
    "TrainConfig",
]

DATASETS = ("fashion-mnist", "digits", "cifar10", "cifar100", "imagefolder")
STAGES = (1, 2, 3, 4)
# Validation-context key of the function that checks a model name against the installed timm
# (``loading`` passes it; results folders are read without it, see ``check_models``).
MODEL_CHECK = "model_check"


class Strict(BaseModel):
    """Base of every section: unknown keys are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)


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


def _searchable(
    kind: type,
    check: Callable[[Any], bool] = lambda _v: True,
    allowed: str = "",
    *,
    range_ok: bool = True,
) -> Any:
    """A field type that takes a constant of ``kind`` or a distribution over such constants.

    ``check`` is applied to the constant, to both ends of a range and to every choice, so that a
    search space can never sample a value the trainer would reject.
    """

    def coerce(value: Any) -> Any:
        if kind is float and _is_number(value):
            value = float(value)
        elif kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if kind in (int, float) and not _is_number(value):
            raise ValueError(f"{value!r} is not a number")
        if kind is bool and not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true/false")
        if kind is str and not isinstance(value, str):
            raise ValueError(f"{value!r} is not a string")
        if not check(value):
            raise ValueError(f"{value!r} is not allowed; {allowed}")
        return value

    def parse(value: Any) -> Any:
        if isinstance(value, dict) and "choices" in value:
            choices = Choices.model_validate(value)
            choices.choices = [coerce(v) for v in choices.choices]
            return choices
        if isinstance(value, dict) and ("low" in value or "high" in value):
            if not range_ok:
                raise ValueError(f"a range is not allowed here, use {{choices: [...]}}; {allowed}")
            rng = Range.model_validate(value)
            if rng.low > rng.high:
                raise ValueError(f"low {rng.low:g} > high {rng.high:g}")
            if rng.log and rng.low <= 0:
                raise ValueError(f"a log range needs low > 0, got low {rng.low:g}")
            for end in (rng.low, rng.high):
                coerce(int(end) if kind is int and float(end).is_integer() else end)
            return rng
        if isinstance(value, dict):
            raise ValueError(
                f"{value!r} is neither a constant nor a distribution ({{low, high, log}} or {{choices: [...]}})"
            )
        return coerce(value)

    return Annotated[Any, BeforeValidator(parse)]


def _positive(v: Any) -> bool:
    return _is_number(v) and v > 0 and math.isfinite(v)


def _non_negative(v: Any) -> bool:
    return _is_number(v) and v >= 0 and math.isfinite(v)


def _fraction(v: Any) -> bool:
    return _is_number(v) and 0 < v < 1


def _stage_list(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) > 0
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


PositiveFloat = _searchable(float, _positive, "must be > 0")
NonNegativeFloat = _searchable(float, _non_negative, "must be >= 0")
PositiveInt = _searchable(int, lambda v: v >= 1, "must be an integer >= 1")
NonNegativeInt = _searchable(int, lambda v: v >= 0, "must be an integer >= 0")
StageList = Annotated[
    _searchable(list, _stage_list, "stages are a sorted list of distinct values in 1..4", range_ok=False),
    BeforeValidator(_parse_stages),
]
EpsValue = _searchable(
    object,
    _eps_value,
    "eps must be > 0 (one value, or one per stage plus one for the final logits)",
)


class DataSpec(Strict):
    """Where the images come from and how they are split."""

    dataset: Literal["fashion-mnist", "digits", "cifar10", "cifar100", "imagefolder"]
    root: str = "auto"
    image_size: int | None = Field(default=None, ge=4, le=1024)
    train_subset: int | None = Field(default=None, ge=10)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    augment: bool = True


class TeacherRecipe(Strict):
    """How ``checkpoint: auto`` trains a teacher once (the result is cached by content hash)."""

    epochs: int = Field(default=4, ge=1)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    batch_size: int = Field(default=128, ge=1)


class ModelSpec(Strict):
    """A timm model: a registered name (``resnet18``) or a timm model class (``MlpMixer``)."""

    model: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None
    pretrained: bool = False
    recipe: TeacherRecipe = Field(default_factory=TeacherRecipe)

    @model_validator(mode="after")
    def _known_model(self, info: ValidationInfo) -> ModelSpec:
        check = (info.context or {}).get(MODEL_CHECK)
        message = check(self.model) if check is not None else None
        if message:
            raise ValueError(message)
        if self.pretrained and self.checkpoint not in (None, "auto"):
            raise ValueError("give either pretrained: true or checkpoint: PATH, not both")
        return self

    @property
    def label(self) -> str:
        """A short name for tables: the model name plus its kwargs."""
        if not self.kwargs:
            return self.model
        args = ",".join(f"{k}={v}" for k, v in sorted(self.kwargs.items()))
        return f"{self.model}({args})"


class PairSpec(Strict):
    """A teacher and the student it distills into."""

    teacher: ModelSpec
    student: ModelSpec

    @model_validator(mode="before")
    @classmethod
    def _teacher_defaults_to_auto(cls, data: Any) -> Any:
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
    """The OFA-KD settings (DESIGN.md section 2); ``method: kd | none`` are the baselines."""

    method: _searchable(str, lambda v: v in ("ofa", "kd", "none"), "allowed: ofa, kd, none") = "ofa"
    stages: StageList | None = None  # None: every stage the student has (1-4 for most models)
    temperature: PositiveFloat = 1.0
    eps: EpsValue = 1.0
    gt_weight: NonNegativeFloat = 1.0
    kd_weight: NonNegativeFloat = 1.0
    ofa_weight: NonNegativeFloat = 1.0
    # YAML reads a bare on/off as true/false: accept both spellings
    teacher_cache: Annotated[
        Literal["auto", "on", "off"], BeforeValidator(lambda v: {True: "on", False: "off"}.get(v, v))
    ] = "auto"
    cache_views: int | None = Field(default=None, ge=1)  # None: one view per epoch (at most 32)


class OptimSpec(Strict):
    """Optimiser and schedule; ``epochs`` is the full budget (ASHA's ``max_t``)."""

    name: _searchable(str, lambda v: v in ("sgd", "adamw"), "allowed: sgd, adamw") = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.05
    momentum: NonNegativeFloat = 0.9
    batch_size: PositiveInt = 128
    epochs: PositiveInt = 5
    warmup_epochs: NonNegativeInt = 1
    clip_grad: NonNegativeFloat = 5.0
    amp: bool = True


class SearchSettings(Strict):
    """Ray Tune settings; ignored by ``ofasearch train``."""

    num_samples: int = Field(default=8, ge=1)
    grace_epochs: int = Field(default=1, ge=1)
    reduction_factor: int = Field(default=3, ge=2)
    max_concurrent: int = Field(default=2, ge=1)
    baselines: bool = True


class ResourcesSpec(Strict):
    """What one trial (or ``ofasearch train``) runs on."""

    workers_per_trial: int = Field(default=1, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)
    backend: Literal["auto", "local", "ray-train"] = "auto"

    @model_validator(mode="after")
    def _local_is_one_process(self) -> ResourcesSpec:
        if self.backend == "local" and self.workers_per_trial > 1:
            raise ValueError(
                f"workers_per_trial: {self.workers_per_trial} needs backend ray-train (or auto); "
                "the local backend trains in one process"
            )
        return self


class Spec(Strict):
    """A search spec (several pairs, distributions allowed)."""

    name: str = Field(default="ofasearch", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    data: DataSpec
    pairs: list[PairSpec] | None = None
    teachers: list[ModelSpec] | None = None
    students: list[ModelSpec] | None = None
    distill: DistillSpec = Field(default_factory=DistillSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    search: SearchSettings = Field(default_factory=SearchSettings)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    storage: str = "./ofasearch_results"

    @model_validator(mode="after")
    def _pairs_given_once(self) -> Spec:
        if "://" in self.storage:
            raise ValueError(
                f"storage: {self.storage!r}: object-store URIs are not supported yet; give a path "
                "on a file system every node mounts"
            )
        product = self.teachers is not None or self.students is not None
        if self.pairs is not None and product:
            raise ValueError("give either pairs or teachers + students, not both")
        if product:
            if not self.teachers or not self.students:
                raise ValueError("teachers and students must both be non-empty lists")
            self.pairs = [PairSpec(teacher=_auto_teacher(t), student=s) for t in self.teachers for s in self.students]
            self.teachers = self.students = None
        if not self.pairs:
            raise ValueError("pairs: at least one teacher/student pair is needed")
        grace, epochs = self.search.grace_epochs, self.optim.epochs
        if isinstance(epochs, int) and grace > epochs:
            raise ValueError(f"search.grace_epochs: {grace} is not allowed; must be <= optim.epochs ({epochs})")
        return self

    def searched_values(self) -> dict[str, Distribution]:
        """Every value given as a distribution, keyed by its dotted path (``distill.eps``)."""
        found: dict[str, Distribution] = {}
        for section in ("distill", "optim"):
            for key, value in getattr(self, section):
                if isinstance(value, (Range, Choices)):
                    found[f"{section}.{key}"] = value
        return found

    def resolve_paths(self, base: Path) -> Spec:
        """Make ``storage``, ``data.root`` and checkpoint paths absolute (Ray trials chdir)."""
        spec = self.model_copy(deep=True)
        spec.storage = _absolute(spec.storage, base)
        if spec.data.root != "auto":
            spec.data.root = _absolute(spec.data.root, base)
        for pair in spec.pairs or []:
            for m in (pair.teacher, pair.student):
                if m.checkpoint not in (None, "auto"):
                    m.checkpoint = _absolute(m.checkpoint, base)
        return spec

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude={"teachers", "students"}, exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False)


def _auto_teacher(model: ModelSpec) -> ModelSpec:
    if model.checkpoint is None and not model.pretrained:
        return model.model_copy(update={"checkpoint": "auto"})
    return model


def _absolute(path: str, base: Path) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base / p).resolve())


class TrainConfig(Spec):
    """A train config: exactly one pair and only constants (what ``ofasearch export`` writes)."""

    @model_validator(mode="after")
    def _constant_single_pair(self) -> TrainConfig:
        problems = []
        if self.pairs is not None and len(self.pairs) != 1:
            problems.append(f"pairs: a train config holds exactly one pair, got {len(self.pairs)}")
        for path, dist in self.searched_values().items():
            problems.append(
                f"{path}: a train config needs a constant, got {_describe(dist)} "
                "(export one from a search with `ofasearch export`)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def pair(self) -> PairSpec:
        assert self.pairs is not None
        return self.pairs[0]


def _describe(dist: Distribution) -> str:
    if isinstance(dist, Range):
        return f"a range {{low: {dist.low:g}, high: {dist.high:g}}}"
    return f"choices {dist.choices}"
