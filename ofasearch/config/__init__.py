"""The one YAML schema (search specs and train configs) and its loading; imports no torch, timm or ray.

:class:`TrainConfig` holds concrete values (``optim.epochs`` is an ``int``); :class:`Spec` holds the
same settings where each tunable one may also be a :class:`Range` or :class:`Choices`."""

from ofasearch.config.loading import format_errors, load_config, load_spec, parse_config, parse_spec, read_yaml
from ofasearch.config.schema import (
    AugmentSearchSpec,
    AugmentSpec,
    Choices,
    ConfirmSettings,
    Constraints,
    DataSpec,
    DistillSearchSpec,
    DistillSpec,
    ModelSpec,
    OptimSearchSpec,
    OptimSpec,
    PairSpec,
    Range,
    ResourcesSpec,
    SearchSettings,
    Spec,
    TeacherRecipe,
    TrainConfig,
    first_rung_after_warmup,
)

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
    "first_rung_after_warmup",
    "format_errors",
    "load_config",
    "load_spec",
    "parse_config",
    "parse_spec",
    "read_yaml",
]
