"""ofasearch: search OFA-KD distillation setups between heterogeneous timm architectures."""

from ofasearch.config import Spec, TrainConfig, load_config, load_spec
from ofasearch.distill import OFADistiller, kd_loss, ofa_loss
from ofasearch.errors import SpecError

__all__ = ["OFADistiller", "Spec", "SpecError", "TrainConfig", "kd_loss", "load_config", "load_spec", "ofa_loss"]
__version__ = "0.1.0"
