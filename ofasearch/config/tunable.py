"""Tunable values: the machinery that turns a train-config section into its search-spec form.

A setting declared with a :class:`Tunable` marker (``PositiveFloat``, ``StageList``, ...) takes a
concrete value in a train config, and a :class:`Range` or :class:`Choices` too in a search spec:
:func:`searchable` makes the search-spec version of a section from the train config's, so each
setting and its checks are declared once. Every problem is reported as ``field.path: message``.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    create_model,
)
from pydantic.fields import FieldInfo
from pydantic_core import core_schema

from ofasearch.config.registry import (
    BRANCH_LOSSES,
    LOSSES,
    METHODS,
    OPTIMIZERS,
    RECIPES,
)

__all__ = [
    "Choices",
    "Distribution",
    "Range",
    "Strict",
    "Tunable",
    "searchable",
]

STAGES = (1, 2, 3, 4)


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
    model.__module__ = section.__module__  # where the section (and so this form) is defined: pickles find it
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
