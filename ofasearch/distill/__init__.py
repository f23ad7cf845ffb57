"""OFA-KD: the losses (as functions and as registered loss objects), the exit branches and the distiller."""

from ofasearch.distill.criteria import LOSSES, DistillLoss, DISTLoss, DKDLoss, KDLoss, OFALoss, Standardized
from ofasearch.distill.distiller import OFADistiller
from ofasearch.distill.loss import kd_loss, ofa_loss, standardize, target_mask

__all__ = [
    "DISTLoss",
    "DKDLoss",
    "DistillLoss",
    "KDLoss",
    "LOSSES",
    "OFADistiller",
    "OFALoss",
    "Standardized",
    "kd_loss",
    "ofa_loss",
    "standardize",
    "target_mask",
]
