"""OFA-KD: the loss, the exit branches and the distiller module."""

from ofasearch.distill.distiller import METHODS, OFADistiller
from ofasearch.distill.loss import kd_loss, ofa_loss, target_mask

__all__ = ["METHODS", "OFADistiller", "kd_loss", "ofa_loss", "target_mask"]
