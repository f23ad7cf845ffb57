"""The one training loop under each named recipe: a few real steps on tiny data."""

import math

import pytest
import torch

from ofasearch.config import parse_config
from ofasearch.data import load_splits
from ofasearch.distill import OFADistiller
from ofasearch.models import build_model
from ofasearch.training.job import input_normalization
from ofasearch.training.loop import fit
from tests.helpers.specs import VIT

pytestmark = pytest.mark.slow  # trains (a minute per recipe on a shared 2-core CPU)

CNN = {"model": "resnet10t"}


@pytest.mark.parametrize(
    "recipe, student",
    [("default", VIT), ("paper-cnn", CNN), ("paper-vit", VIT)],
)
def test_each_recipe_trains_a_few_steps(recipe, student):
    """4 updates of 16 images at 32 px (digits, 8 px stored, upsampled per batch), OFA-KD with a
    live teacher; the paper recipes' 300 epochs and batch 1024 are overridden, everything else
    (optimiser, schedule, clipping, augmentation, mixup, label smoothing, EMA) is the recipe's."""
    config = parse_config(
        {
            "data": {"dataset": "digits", "image_size": 32, "train_subset": 64, "val_size": 40},
            "recipe": recipe,
            "pairs": [{"teacher": {"model": "resnet10t"}, "student": student}],
            "distill": {"method": "ofa", "teacher_cache": "off"},
            "optim": {"epochs": 2, "batch_size": 16, "warmup_epochs": 1},
        }
    )
    splits = load_splits(config.data)
    assert len(splits.train) == 64
    torch.manual_seed(0)
    teacher = build_model("resnet10t", **splits.model_args).eval()
    mean_std = input_normalization(config, splits)
    assert (mean_std is not None) == (recipe != "default"), "the paper normalises both models with the data's mean/std"
    distiller = OFADistiller.from_config(config, teacher, mean_std=mean_std, **splits.model_args)
    before = {k: v.clone() for k, v in distiller.student.state_dict().items()}
    result = fit(distiller, splits, config.optim, seed=0, device=torch.device("cpu"), augment=config.augment)
    assert not result.diverged
    assert len(result.history) == 2
    assert all(math.isfinite(e.train_loss) and e.parts["ofa"] > 0 for e in result.history)
    assert result.test_acc is not None
    assert 0 <= result.test_acc <= 1
    after = distiller.student.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the student learned something"
    gt = type(distiller.gt_loss).__name__ if distiller.gt_loss is not None else None
    assert (
        gt
        == {"default": None, "paper-cnn": "LabelSmoothingCrossEntropy", "paper-vit": "SoftTargetCrossEntropy"}[recipe]
    )
