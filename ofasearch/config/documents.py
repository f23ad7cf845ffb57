"""The two documents: a search spec (:class:`Spec`: pairs, searched values, search settings) and a
train config (:class:`TrainConfig`: one pair, a concrete value for every setting), with the
recipe and pair-settings rules that fill them from a YAML file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from ofasearch.config.registry import (
    RECIPES,
)
from ofasearch.config.search_settings import ResourcesSpec, SearchSettings
from ofasearch.config.sections import (
    SEARCHABLE_SECTIONS,
    AugmentSearchSpec,
    AugmentSpec,
    DataSpec,
    DistillSearchSpec,
    DistillSpec,
    OptimSearchSpec,
    OptimSpec,
    PairSpec,
    batch_split_problem,
)
from ofasearch.config.tunable import (
    Choices,
    Distribution,
    Range,
    RecipeName,
    Strict,
)
from ofasearch.utils.storage import is_uri, uri_problem

__all__ = ["Spec", "TrainConfig", "first_rung_after_warmup"]

# Keys that train configs written before TrainConfig lost them still carry (best.yaml, exports,
# the trials table's ``config`` column); they meant nothing to ``ofasearch train``.
LEGACY_TRAIN_KEYS = ("search", "storage")


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
