"""The one YAML schema behind search specs and train configs, in three modules:

- :mod:`ofasearch.config.tunable`: tunable values (a constant in a train config, a :class:`Range`
  or :class:`Choices` in a search spec) and :func:`searchable`, which derives the search-spec
  form of a section from the train config's, so each setting and its checks are declared once;
- :mod:`ofasearch.config.sections`: the sections (data, models, pairs, distill, optim, augment,
  search, resources);
- :mod:`ofasearch.config.documents`: the two documents, :class:`Spec` and :class:`TrainConfig`.

This module gathers their names. Every problem is reported as ``field.path: message`` (see
:mod:`ofasearch.errors`), so a typo never surfaces in the middle of a run.
"""

from ofasearch.config.documents import LEGACY_TRAIN_KEYS, Spec, TrainConfig, first_rung_after_warmup
from ofasearch.config.search_settings import ConfirmSettings, Constraints, ResourcesSpec, SearchSettings
from ofasearch.config.sections import (
    DATASETS,
    HELD_OUT_PROTOCOL,
    LATER_DATA_KEYS,
    MODEL_CHECK,
    PAPER_PROTOCOL,
    RESIZE_POLICIES,
    SEARCHABLE_SECTIONS,
    AugmentSearchSpec,
    AugmentSpec,
    DataSpec,
    DistillSearchSpec,
    DistillSpec,
    ModelSpec,
    OptimSearchSpec,
    OptimSpec,
    PairSpec,
    TeacherRecipe,
    batch_split_problem,
)
from ofasearch.config.tunable import STAGES, Choices, Distribution, Range, Strict, Tunable, searchable

__all__ = [
    "DATASETS",
    "HELD_OUT_PROTOCOL",
    "LATER_DATA_KEYS",
    "LEGACY_TRAIN_KEYS",
    "MODEL_CHECK",
    "PAPER_PROTOCOL",
    "RESIZE_POLICIES",
    "SEARCHABLE_SECTIONS",
    "STAGES",
    "AugmentSearchSpec",
    "AugmentSpec",
    "Choices",
    "ConfirmSettings",
    "Constraints",
    "DataSpec",
    "DistillSearchSpec",
    "DistillSpec",
    "Distribution",
    "ModelSpec",
    "OptimSearchSpec",
    "OptimSpec",
    "PairSpec",
    "Range",
    "ResourcesSpec",
    "SearchSettings",
    "Spec",
    "Strict",
    "TeacherRecipe",
    "TrainConfig",
    "Tunable",
    "batch_split_problem",
    "first_rung_after_warmup",
    "searchable",
]
