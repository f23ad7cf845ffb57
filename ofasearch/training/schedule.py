"""The learning-rate schedule of a training: timm's, built from ``optim.*``.

timm's ``create_scheduler_v2`` builds it (cosine or step decay, a linear warm-up, stepped per
update or per epoch), so a recipe can say exactly what a reference training script did: the
paper's CIFAR runs (cosine, per update in ofasearch's default) and its ImageNet CNN runs (step
decay every 30 epochs, stepped per epoch, warm-up from a fixed small lr).
"""

from __future__ import annotations

import torch
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler

from ofasearch.config import OptimSpec

__all__ = ["build_schedule"]


def build_schedule(optimizer: torch.optim.Optimizer, optim: OptimSpec, steps_per_epoch: int) -> Scheduler:
    """timm's scheduler for ``optim``: a linear warm-up of ``warmup_epochs`` from ``warmup_lr``,
    then cosine to ``min_lr`` or a step decay. The training loop calls ``step_update`` after every
    update and ``step`` after every epoch; the scheduler acts on the one ``step_on`` names.

    The default warm-up start ``lr / (warm-up steps + 1)`` makes step ``t`` of the warm-up use
    ``lr * (t + 1) / (warm-up steps + 1)``: the first update already learns."""
    lr, epochs, warmup = float(optim.lr), int(optim.epochs), int(optim.warmup_epochs)
    per_epoch = optim.step_on == "epoch"
    warmup_steps = warmup * (1 if per_epoch else steps_per_epoch)
    warmup_lr = float(optim.warmup_lr) if optim.warmup_lr is not None else lr / (warmup_steps + 1)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=str(optim.schedule),
        # a prefixed warm-up is part of the budget: the schedule ends at the last epoch
        num_epochs=max(1, epochs - warmup) if optim.warmup_prefix else epochs,
        decay_epochs=float(optim.decay_epochs),
        decay_rate=float(optim.decay_rate),
        min_lr=float(optim.min_lr),
        warmup_lr=warmup_lr,
        warmup_epochs=warmup,
        warmup_prefix=bool(optim.warmup_prefix),
        step_on_epochs=per_epoch,
        updates_per_epoch=steps_per_epoch,
    )
    assert scheduler is not None  # "cosine" and "step" always build one
    return scheduler
