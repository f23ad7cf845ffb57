"""The OFA-KD loss (target-class enhancement by an exponent) and Hinton's KD loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["kd_loss", "ofa_loss", "target_mask"]


def target_mask(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot mask of the target class; soft labels (mixup, smoothing) use their argmax."""
    if target.ndim == 2:
        target = target.argmax(dim=-1)
    if target.ndim != 1:
        raise ValueError(f"target must be (B,) class indices or (B, C) soft labels, got {tuple(target.shape)}")
    return F.one_hot(target.long(), num_classes).to(torch.float32)


def ofa_loss(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    target: torch.Tensor,
    eps: float = 1.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """OFA loss: ``mean_b -sum_c ((p_t + m)^eps - m)_c * log p_s,c``, ``m`` the target one-hot
    (Hao et al., "One-for-All: Bridge the Gap Between Heterogeneous Architectures in Knowledge
    Distillation", NeurIPS 2023; reference code github.com/Hao840/OFAKD).

    With ``eps == 1`` this is cross-entropy against the teacher's soft labels; ``eps > 1`` adds
    weight to the target class in proportion to the teacher's confidence in it. Temperature
    divides both logits and the loss is not rescaled by T^2, as in the reference. Half-precision
    logits are computed in float32 so that AMP cannot turn the power into inf; float64 stays
    float64.
    """
    if eps <= 0 or temperature <= 0:
        raise ValueError(f"eps and temperature must be > 0, got eps={eps}, temperature={temperature}")
    dtype = torch.promote_types(torch.promote_types(logits_student.dtype, logits_teacher.dtype), torch.float32)
    z_s = logits_student.to(dtype) / temperature
    z_t = logits_teacher.to(dtype) / temperature
    mask = target_mask(target, z_s.shape[-1]).to(device=z_s.device, dtype=dtype)
    weight = (z_t.softmax(dim=-1) + mask).pow(eps) - mask
    return -(weight * z_s.log_softmax(dim=-1)).sum(dim=-1).mean()


def kd_loss(logits_student: torch.Tensor, logits_teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Hinton KD: ``T^2 * KL(p_t || p_s)`` at temperature T (the vanilla-KD baseline)."""
    log_p_s = (logits_student.float() / temperature).log_softmax(dim=-1)
    log_p_t = (logits_teacher.float() / temperature).log_softmax(dim=-1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * temperature**2
