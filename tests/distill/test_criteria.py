"""The registered loss objects, logit standardization, and every composition training a step."""

import itertools
import math

import numpy as np
import pytest
import torch

from ofasearch.config import DistillSpec, parse_config
from ofasearch.config.registry import BRANCH_LOSSES, LOSSES
from ofasearch.distill import DISTLoss, DKDLoss, KDLoss, OFADistiller, OFALoss, Standardized, standardize
from ofasearch.distill.criteria import build_loss
from ofasearch.distill.loss import kd_loss
from ofasearch.models import build_model
from tests.helpers.specs import CONFIG, VIT


def _paper_standardize(z: np.ndarray) -> np.ndarray:
    """Sun et al. (CVPR 2024), Eq. 9 and Algorithm 1, written out: Z(z) = (z - mean) / sigma,
    sigma = sqrt(1/K * sum_k (z_k - mean)^2), per sample."""
    out = np.empty_like(z)
    for i, row in enumerate(z):
        k = len(row)
        mean = sum(row) / k
        sigma = math.sqrt(sum((v - mean) ** 2 for v in row) / k)
        out[i] = [(v - mean) / sigma for v in row]
    return out


def test_standardize_matches_the_papers_formula_in_float64():
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 3.0, size=(5, 7)) + rng.normal(0.0, 10.0, size=(5, 1))
    got = standardize(torch.from_numpy(z), eps=0.0)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _paper_standardize(z), rtol=1e-12, atol=1e-12)


def test_a_standardized_loss_ignores_the_logits_shift_and_scale():
    """What the paper standardizes for: a student whose logits match the teacher's up to range
    and offset has nothing left to learn."""
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(6, 10, generator=g, dtype=torch.float64)
    student = 0.2 * teacher + 3.0  # the teacher's relations at a fifth of its range
    labels = torch.arange(6)
    plain, standardized = KDLoss(temperature=2.0), Standardized(KDLoss(temperature=2.0))
    assert plain(student, teacher, labels).item() > 0.1
    assert standardized(student, teacher, labels).item() == pytest.approx(0.0, abs=1e-6)  # KD runs in float32
    expected = kd_loss(standardize(student), standardize(teacher), 2.0)
    assert standardized(student, teacher, labels).item() == pytest.approx(expected.item())


def test_each_loss_object_checks_its_own_parameters():
    with pytest.raises(ValueError, match=r"OFALoss.eps: 0 is not allowed"):
        OFALoss(eps=0)
    with pytest.raises(ValueError, match=r"DISTLoss.temperature: -1.0 is not allowed"):
        DISTLoss(temperature=-1.0)


def test_build_loss_reads_each_losses_settings_from_the_distill_section():
    d = DistillSpec(
        temperature=2.0, dkd_alpha=0.5, dkd_beta=2.0, dkd_temperature=3.0, dist_gamma=0.25, dist_temperature=4.0
    )
    assert build_loss("ofa", d, eps=1.3) == OFALoss(eps=1.3, temperature=2.0)
    assert build_loss("kd", d) == KDLoss(temperature=2.0)
    assert build_loss("dkd", d, epochs=24) == DKDLoss(alpha=0.5, beta=2.0, temperature=3.0, warmup_epochs=2)
    assert build_loss("dist", d, standardized=True) == Standardized(DISTLoss(gamma=0.25, temperature=4.0))
    assert [DKDLoss(warmup_epochs=4).weight_at(e) for e in (0, 1, 3, 7, None)] == [0.25, 0.5, 1.0, 1.0, 1.0]


COMPOSITIONS = [
    {"logit_loss": logit, "branch_loss": branch, "stages": stages, "logit_standardize": ls, "branch_standardize": ls}
    for logit, branch, stages, ls in itertools.product(LOSSES, BRANCH_LOSSES, ([], [2, 3, 4]), (False, True))
    if stages or branch == "ofa"  # without branches the branch loss is never used
]
PAIRS = {
    "cnn->vit": ({"model": "resnet10t"}, VIT),
    "vit->cnn": (VIT, {"model": "resnet10t"}),
}


@pytest.mark.parametrize("pair", PAIRS)
def test_every_composition_trains_one_step(pair):
    """Each loss on the logits with each loss on the branches (or none), with and without logit
    standardization: a finite loss whose gradient moves the student (and the branches)."""
    teacher_spec, student_spec = PAIRS[pair]
    shape = {"num_classes": 10, "in_chans": 1, "image_size": 16}
    teacher = build_model(teacher_spec["model"], teacher_spec.get("kwargs"), **shape)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(8, 1, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
    seen = set()
    for composition in COMPOSITIONS:
        config = parse_config(
            {**CONFIG, "pairs": [{"teacher": teacher_spec, "student": student_spec}], "distill": composition}
        )
        d = OFADistiller.from_config(config, teacher, **shape)
        assert len(d.branches) == len(composition["stages"])
        before = [p.detach().clone() for p in d.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD([p for p in d.parameters() if p.requires_grad], lr=0.1)
        loss, parts = d(images, labels)
        loss.backward()
        optimizer.step()
        assert math.isfinite(loss.item()), config.distill.composition
        assert ("ofa" in parts) == bool(composition["stages"]), config.distill.composition
        after = [p.detach() for p in d.parameters() if p.requires_grad]
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)), config.distill.composition
        seen.add(config.distill.composition)
    assert len(seen) == len(COMPOSITIONS), "each composition is told apart by its name"
