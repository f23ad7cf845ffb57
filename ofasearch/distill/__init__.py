"""OFA-KD: the loss, the exit branches and the distiller module."""

from ofasearch.distill.distiller import METHOD_LOSSES, OFADistiller
from ofasearch.distill.loss import kd_loss, ofa_loss, target_mask

__all__ = ["METHOD_LOSSES", "OFADistiller", "kd_loss", "ofa_loss", "target_mask"]
