"""The logit losses: OFA-KD (target-class enhancement by an exponent), and the baselines Hinton
KD, DKD and DIST. All of them read only the teacher's final logits, so all run from the logit cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["dist_loss", "dkd_loss", "dkd_parts", "kd_loss", "ofa_loss", "standardize", "target_mask"]


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


def dkd_parts(
    logits_student: torch.Tensor, logits_teacher: torch.Tensor, target: torch.Tensor, temperature: float = 4.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample DKD terms ``(tckd, nckd, p_t_target)`` at temperature T, each times ``T^2``.

    TCKD is the KL divergence between teacher and student binary distributions (target class vs.
    all others); NCKD the KL divergence among the non-target classes only (each side
    renormalised). Hinton KD decomposes as ``KD = TCKD + (1 - p_t_target) * NCKD`` per sample
    (Zhao et al., CVPR 2022, Eq. 3), the identity the tests check.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z_s = logits_student.float() / temperature
    z_t = logits_teacher.float() / temperature
    mask = target_mask(target, z_s.shape[-1]).to(z_s.device).bool()
    log_b_s, log_b_t = _log_binary(z_s, mask), _log_binary(z_t, mask)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(dim=-1)
    # non-target classes only: the target's logit masked out before the softmax
    # (the -inf entries are replaced by 0 before any product, so no NaN reaches the gradients)
    log_q_s = torch.where(mask, 0.0, z_s.masked_fill(mask, -torch.inf).log_softmax(dim=-1))
    log_q_t = torch.where(mask, 0.0, z_t.masked_fill(mask, -torch.inf).log_softmax(dim=-1))
    nckd = torch.where(mask, 0.0, log_q_t.exp() * (log_q_t - log_q_s)).sum(dim=-1)
    scale = temperature**2
    return tckd * scale, nckd * scale, log_b_t[:, 0].exp()


def _log_binary(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log (p_target, 1 - p_target) of softmax(z), each as a log-sum-exp (no 1 - p cancellation)."""
    log_all = z.logsumexp(dim=-1)
    log_target = z.masked_fill(~mask, -torch.inf).logsumexp(dim=-1)
    log_rest = z.masked_fill(mask, -torch.inf).logsumexp(dim=-1)
    return torch.stack([log_target - log_all, log_rest - log_all], dim=-1)


def dkd_loss(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Decoupled KD: ``mean_b (alpha * TCKD + beta * NCKD)`` (Zhao, Cui, Song, Qiu, Liang,
    "Decoupled Knowledge Distillation", CVPR 2022; reference code github.com/megvii-research/mdistiller).

    Hinton KD weighs NCKD by ``1 - p_t_target``, so a confident teacher suppresses what it knows
    about the other classes; DKD gives it its own weight ``beta``. Defaults are the paper's
    CIFAR-100 setting (alpha 1, beta 8, T 4; on ImageNet it used beta 0.5, T 1). Its linear
    warm-up of the whole term is applied by the distiller (``OFADistiller.set_epoch``).
    """
    tckd, nckd, _ = dkd_parts(logits_student, logits_teacher, target, temperature)
    return (alpha * tckd + beta * nckd).mean()


def _pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a = a - a.mean(dim=-1, keepdim=True)
    b = b - b.mean(dim=-1, keepdim=True)
    return (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


def dist_loss(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """DIST: ``T^2 * (beta * (1 - inter) + gamma * (1 - intra))`` (Huang, You, Wang, Qian, Xu,
    "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022; reference code github.com/hunto/DIST_KD).

    ``inter`` is the mean over images of the Pearson correlation between the student's and the
    teacher's class probabilities (each image's ranking of the classes); ``intra`` the mean over
    classes of the correlation across the batch (how the images rank on each class). Matching
    relations instead of exact probabilities tolerates a teacher much stronger than the student.
    Defaults are the paper's (beta = gamma = 1, T = 1, its ImageNet setting and the reference
    code's defaults). A batch of one image has no intra-class relation: that term is 0 then.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p_s = (logits_student.float() / temperature).softmax(dim=-1)
    p_t = (logits_teacher.float() / temperature).softmax(dim=-1)
    inter = 1.0 - _pearson(p_s, p_t).mean()
    intra = 1.0 - _pearson(p_s.T, p_t.T).mean() if p_s.shape[0] > 1 else p_s.new_zeros(())
    return temperature**2 * (beta * inter + gamma * intra)


def standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Logit standardization: each sample's logits z-scored, ``(z - mean(z)) / std(z)`` over the
    classes (Sun, Zhu, Ren, Guo, Chen, Zhou, "Logit Standardization in Knowledge Distillation",
    CVPR 2024, Eq. 9 and Algorithm 1), with the population standard deviation of their equation.

    A student then only has to match the teacher's logit *relations*, not their magnitude, which a
    small student of another architecture often cannot reach; the loss's temperature acts as the
    base temperature of the standardized logits. Half precision is computed in float32.
    """
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    mean = z.mean(dim=-1, keepdim=True)
    std = z.std(dim=-1, keepdim=True, correction=0)
    return (z - mean) / (std + eps)
