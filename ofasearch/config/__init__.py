"""The one YAML schema (search specs and train configs) and its loading; imports no torch, timm or ray."""

from ofasearch.config.loading import format_errors, load_config, load_spec, parse_config, parse_spec, read_yaml
from ofasearch.config.schema import (
    Choices,
    DataSpec,
    DistillSpec,
    ModelSpec,
    OptimSpec,
    PairSpec,
    Range,
    ResourcesSpec,
    SearchSettings,
    Spec,
    TeacherRecipe,
    TrainConfig,
)

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
    "format_errors",
    "load_config",
    "load_spec",
    "parse_config",
    "parse_spec",
    "read_yaml",
]
