"""timm models as ofasearch sees them: creation, weights, normalisation, stages and family."""

from ofasearch.models.factory import build_model, normalization, unknown_model_message
from ofasearch.models.stages import ModelInfo, StageShape, describe_model, is_token_model, stage_indices
from ofasearch.models.weights import load_weights, read_state_dict

__all__ = [
    "ModelInfo",
    "StageShape",
    "build_model",
    "describe_model",
    "is_token_model",
    "load_weights",
    "normalization",
    "read_state_dict",
    "stage_indices",
    "unknown_model_message",
]
