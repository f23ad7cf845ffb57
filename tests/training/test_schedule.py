"""The learning-rate schedule: timm's schedulers, as ``optim.*`` asks for them."""

import pytest
import torch
from timm.scheduler import CosineLRScheduler, StepLRScheduler

from ofasearch.config import OptimSpec, parse_config
from ofasearch.data import load_splits
from ofasearch.distill import OFADistiller
from ofasearch.training.loop import fit
from ofasearch.training.schedule import build_schedule


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


def test_the_default_is_a_prefixed_warm_up_then_cosine_per_update():
    """Update t of the warm-up uses lr (t + 1) / (W + 1); the cosine then ends at min_lr on the
    last update, as timm's CosineLRScheduler stepped per update over the rest of the budget."""
    steps, optim = 10, OptimSpec(lr=0.5, epochs=6, warmup_epochs=2, min_lr=0.01)
    ours, reference = _optimizer(0.5), _optimizer(0.5)
    schedule = build_schedule(ours, optim, steps)
    timm_own = CosineLRScheduler(
        reference,
        t_initial=40,
        warmup_t=20,
        warmup_lr_init=0.5 / 21,
        warmup_prefix=True,
        lr_min=0.01,
        t_in_epochs=False,
    )
    assert _lr(ours) == pytest.approx(0.5 / 21)
    for update in range(1, 61):
        schedule.step_update(update)
        timm_own.step_update(update)
        assert _lr(ours) == pytest.approx(_lr(reference)), f"update {update}"
        if update < 20:
            assert _lr(ours) == pytest.approx(0.5 * (update + 1) / 21)
        if update % steps == 0:
            schedule.step(update // steps)  # the loop's end of epoch: a per-update schedule ignores it
            assert _lr(ours) == pytest.approx(_lr(reference))
    assert _lr(ours) == pytest.approx(0.01)


def test_the_step_schedule_per_epoch_is_timms():
    """The paper's ImageNet CNN schedule: x0.1 every 30 epochs, per epoch, a warm-up from a fixed
    lr that the decay counts into (no prefix): the lr of chosen epochs equals timm's."""
    optim = OptimSpec(
        lr=0.1,
        epochs=100,
        schedule="step",
        decay_epochs=30,
        decay_rate=0.1,
        warmup_epochs=5,
        warmup_lr=1e-4,
        warmup_prefix=False,
        step_on="epoch",
    )
    ours, reference = _optimizer(0.1), _optimizer(0.1)
    schedule = build_schedule(ours, optim, steps_per_epoch=7)
    timm_own = StepLRScheduler(
        reference, decay_t=30, decay_rate=0.1, warmup_t=5, warmup_lr_init=1e-4, warmup_prefix=False, t_in_epochs=True
    )
    seen = {0: _lr(ours)}
    for epoch in range(1, 100):
        schedule.step_update(epoch * 7)  # ignored: the schedule moves per epoch
        schedule.step(epoch)
        timm_own.step(epoch)
        assert _lr(ours) == pytest.approx(_lr(reference)), f"epoch {epoch}"
        seen[epoch] = _lr(ours)
    assert seen[0] == pytest.approx(1e-4)
    assert (seen[5], seen[29], seen[30], seen[60], seen[99]) == pytest.approx((0.1, 0.1, 0.01, 0.001, 1e-4))


def test_a_training_runs_each_epoch_at_its_scheduled_lr():
    """Through the one training loop: a step decay per epoch halves the lr every epoch."""
    config = parse_config(
        {
            "data": {"dataset": "digits", "train_subset": 64, "val_size": 40},
            "pairs": [{"teacher": {"model": "resnet10t"}, "student": {"model": "resnet10t"}}],
            "distill": {"method": "none"},
            "optim": {
                "name": "sgd",
                "lr": 0.08,
                "epochs": 3,
                "batch_size": 32,
                "warmup_epochs": 0,
                "schedule": "step",
                "decay_epochs": 1,
                "decay_rate": 0.5,
                "step_on": "epoch",
            },
        }
    )
    splits = load_splits(config.data)
    torch.manual_seed(0)
    distiller = OFADistiller.from_config(config, None, **splits.model_args)
    result = fit(distiller, splits, config.optim, seed=0, device=torch.device("cpu"), augment=config.augment)
    assert [e.lr for e in result.history] == pytest.approx([0.08, 0.04, 0.02])
