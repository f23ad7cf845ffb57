"""timm models as ofasearch sees them: creation, weights, normalisation, stages and family."""

from ofasearch.models.factory import build_model, load_weights, normalization, unknown_model_message
from ofasearch.models.stages import ModelInfo, StageShape, describe_model, is_token_model, stage_indices

__all__ = [
    "ModelInfo",
    "StageShape",
    "build_model",
    "describe_model",
    "is_token_model",
    "load_weights",
    "normalization",
    "stage_indices",
    "unknown_model_message",
]
