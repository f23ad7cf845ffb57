import math

import pytest
import torch
import torch.nn.functional as F

from ofasearch import kd_loss, ofa_loss
from ofasearch.distill.loss import dist_loss, dkd_loss, dkd_parts


def hand_ofa(z_s, z_t, labels, eps, temperature):
    """Per-element loops over the OFA loss of Hao et al. (NeurIPS 2023), no vectorised shortcuts."""
    total = 0.0
    for b in range(z_s.shape[0]):
        es = [math.exp(v / temperature) for v in z_s[b].tolist()]
        et = [math.exp(v / temperature) for v in z_t[b].tolist()]
        p_s = [e / sum(es) for e in es]
        p_t = [e / sum(et) for e in et]
        row = 0.0
        for c in range(len(p_s)):
            m = 1.0 if c == labels[b] else 0.0
            w = (p_t[c] + m) ** eps - m
            row -= w * math.log(p_s[c])
        total += row
    return total / z_s.shape[0]


@pytest.mark.parametrize("eps", [0.8, 1.0, 1.2, 1.5])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_ofa_loss_matches_hand_computation(eps, temperature):
    g = torch.Generator().manual_seed(int(eps * 10 + temperature))
    z_s, z_t = torch.randn(5, 7, generator=g) * 3, torch.randn(5, 7, generator=g) * 3
    labels = torch.randint(0, 7, (5,), generator=g)
    expected = hand_ofa(z_s, z_t, labels.tolist(), eps, temperature)
    got_int = ofa_loss(z_s, z_t, labels, eps=eps, temperature=temperature)
    got_onehot = ofa_loss(z_s, z_t, F.one_hot(labels, 7).float(), eps=eps, temperature=temperature)
    assert got_int.item() == pytest.approx(expected, rel=1e-5)
    assert got_onehot.item() == pytest.approx(expected, rel=1e-5)


def test_soft_labels_use_their_argmax_as_target():
    g = torch.Generator().manual_seed(3)
    z_s, z_t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    soft = torch.softmax(torch.randn(4, 5, generator=g) * 4, dim=-1)  # e.g. mixup labels
    expected = hand_ofa(z_s, z_t, soft.argmax(-1).tolist(), 1.3, 1.0)
    assert ofa_loss(z_s, z_t, soft, eps=1.3).item() == pytest.approx(expected, rel=1e-5)


def test_eps_one_is_soft_label_cross_entropy():
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    labels = torch.randint(0, 10, (8,), generator=g)
    for t in (1.0, 3.0):
        soft_ce = F.cross_entropy(z_s / t, torch.softmax(z_t / t, dim=-1))
        assert ofa_loss(z_s, z_t, labels, eps=1.0, temperature=t).item() == pytest.approx(soft_ce.item(), rel=1e-6)


def test_eps_above_one_adds_weight_to_the_target_class():
    z_t = torch.tensor([[2.0, 0.0, 0.0]])
    target = torch.tensor([0])
    # Student confident in the target: larger eps lowers its loss relative to eps=1 only via weights.
    z_s_wrong = torch.tensor([[0.0, 3.0, 0.0]])
    assert ofa_loss(z_s_wrong, z_t, target, eps=1.5) > ofa_loss(z_s_wrong, z_t, target, eps=1.0)


def test_kd_loss_is_scaled_kl():
    g = torch.Generator().manual_seed(1)
    z_s, z_t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    t = 2.0
    p_t = torch.softmax(z_t / t, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(z_s / t, -1))).sum(-1).mean() * t * t
    assert kd_loss(z_s, z_t, t).item() == pytest.approx(kl.item(), rel=1e-5)
    assert kd_loss(z_t, z_t, t).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("bad", [{"eps": 0.0}, {"eps": -1.0}, {"temperature": 0.0}])
def test_non_positive_eps_or_temperature_is_rejected(bad):
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="must be > 0"):
        ofa_loss(z, z, torch.tensor([0, 1]), **bad)


@pytest.mark.parametrize(
    ("eps", "temperature", "expected"),
    [
        (1.0, 1.0, 6.200444280006269),
        (1.5, 1.0, 1.3085033061284035),
        (1.0, 2.0, 5.106203989230901),
        (1.5, 2.0, 0.8455521481396944),
    ],
)
def test_ofa_loss_gives_the_reference_values_in_float64(eps, temperature, expected):
    """Values of the reference implementation's ``ofa_loss`` (Hao840/OFAKD at f7bb896) in float64,
    computed by running it: B=4, C=100, z_s[i,j] = 3 sin(100i+j), z_t[i,j] = 4 cos(0.7 (100i+j))."""
    n = 100 * torch.arange(4, dtype=torch.float64)[:, None] + torch.arange(100, dtype=torch.float64)[None]
    z_s, z_t = 3 * torch.sin(n), 4 * torch.cos(0.7 * n)
    got = ofa_loss(z_s, z_t, torch.tensor([3, 17, 42, 99]), eps=eps, temperature=temperature)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-12, abs=0)


def test_half_precision_logits_are_computed_in_float32():
    z = torch.randn(3, 5).half()
    assert ofa_loss(z, z, torch.tensor([0, 1, 2]), eps=1.5).dtype == torch.float32


# ---------------------------------------------------------------------------------------- DKD
def _softmax(values, temperature):
    e = [math.exp(v / temperature) for v in values]
    return [x / sum(e) for x in e]


def hand_dkd(z_s, z_t, labels, alpha, beta, temperature):
    """DKD (Zhao et al., CVPR 2022) by loops: binary KL of (target, rest) and KL over the
    renormalised non-target classes, each times T^2, averaged over the batch."""
    total = 0.0
    for b in range(len(labels)):
        p_s, p_t = _softmax(z_s[b], temperature), _softmax(z_t[b], temperature)
        g = labels[b]
        bs, bt = [p_s[g], 1 - p_s[g]], [p_t[g], 1 - p_t[g]]
        tckd = sum(t * math.log(t / s) for t, s in zip(bt, bs, strict=True))
        others = [c for c in range(len(p_s)) if c != g]
        qs = [p_s[c] / (1 - p_s[g]) for c in others]
        qt = [p_t[c] / (1 - p_t[g]) for c in others]
        nckd = sum(t * math.log(t / s) for t, s in zip(qt, qs, strict=True))
        total += temperature**2 * (alpha * tckd + beta * nckd)
    return total / len(labels)


@pytest.mark.parametrize(("alpha", "beta", "temperature"), [(1.0, 8.0, 4.0), (1.0, 1.0, 1.0), (0.5, 2.0, 2.0)])
def test_dkd_loss_matches_hand_computation(alpha, beta, temperature):
    g = torch.Generator().manual_seed(int(alpha * 10 + beta + temperature))
    z_s, z_t = torch.randn(4, 5, generator=g) * 2, torch.randn(4, 5, generator=g) * 2
    labels = torch.randint(0, 5, (4,), generator=g)
    expected = hand_dkd(z_s.tolist(), z_t.tolist(), labels.tolist(), alpha, beta, temperature)
    got = dkd_loss(z_s, z_t, labels, alpha=alpha, beta=beta, temperature=temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_dkd_on_a_two_by_three_example_worked_by_hand():
    # target 0; teacher probs at T=1: softmax([ln 2, 0, 0]) = (1/2, 1/4, 1/4); student uniform
    z_t = torch.tensor([[math.log(2.0), 0.0, 0.0]])
    z_s = torch.zeros(1, 3)
    # TCKD = 1/2 ln((1/2)/(1/3)) + 1/2 ln((1/2)/(2/3)); NCKD = 0 (both uniform over classes 1, 2)
    tckd = 0.5 * math.log(1.5) + 0.5 * math.log(0.75)
    assert dkd_loss(z_s, z_t, torch.tensor([0]), alpha=1.0, beta=8.0, temperature=1.0).item() == pytest.approx(tckd)
    # target 1 instead: NCKD over classes (0, 2): teacher (2/3, 1/3) vs student (1/2, 1/2)
    nckd = 2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3)
    tckd1 = 0.25 * math.log(0.75) + 0.75 * math.log(0.75 / (2 / 3))
    got = dkd_loss(z_s, z_t, torch.tensor([1]), alpha=1.0, beta=2.0, temperature=1.0).item()
    assert got == pytest.approx(tckd1 + 2 * nckd)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_is_tckd_plus_nckd_weighted_by_the_teachers_non_target_mass(temperature):
    """Zhao et al., Eq. 3: per sample, KD = TCKD + (1 - p_t[target]) NCKD; so DKD with alpha = 1
    and beta = 1 - p_t[target] is KD exactly, and beta = 1 is KD only where the teacher is unsure."""
    g = torch.Generator().manual_seed(5)
    z_s, z_t = torch.randn(6, 7, generator=g) * 3, torch.randn(6, 7, generator=g) * 3
    labels = torch.randint(0, 7, (6,), generator=g)
    tckd, nckd, p_target = dkd_parts(z_s, z_t, labels, temperature)
    kd_per_sample = (
        F.kl_div(
            (z_s / temperature).log_softmax(-1), (z_t / temperature).log_softmax(-1), log_target=True, reduction="none"
        ).sum(-1)
        * temperature**2
    )
    torch.testing.assert_close(tckd + (1 - p_target) * nckd, kd_per_sample, rtol=1e-5, atol=1e-6)
    assert (tckd + (1 - p_target) * nckd).mean().item() == pytest.approx(
        kd_loss(z_s, z_t, temperature).item(), rel=1e-5
    )
    # alpha = beta = 1 weighs NCKD fully: at least KD, equal only where p_t[target] -> 0
    assert dkd_loss(z_s, z_t, labels, alpha=1.0, beta=1.0, temperature=temperature) >= kd_loss(z_s, z_t, temperature)
    assert dkd_loss(z_t, z_t, labels, temperature=temperature).item() == pytest.approx(0.0, abs=1e-6)


def test_dkd_gradients_are_finite_for_confident_logits():
    z_s = (torch.randn(4, 10) * 100).requires_grad_()
    z_t = torch.randn(4, 10) * 100
    dkd_loss(z_s, z_t, torch.tensor([0, 1, 2, 3]), temperature=1.0).backward()
    assert torch.isfinite(z_s.grad).all()


# --------------------------------------------------------------------------------------- DIST
def _pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    den = math.sqrt(sum((x - ma) ** 2 for x in a)) * math.sqrt(sum((y - mb) ** 2 for y in b))
    return num / den


def hand_dist(z_s, z_t, beta, gamma, temperature):
    """DIST (Huang et al., NeurIPS 2022) by loops: 1 - mean Pearson over rows (images) and over
    columns (classes) of the probability matrices, times T^2."""
    p_s = [_softmax(r, temperature) for r in z_s]
    p_t = [_softmax(r, temperature) for r in z_t]
    inter = 1 - sum(_pearson(a, b) for a, b in zip(p_s, p_t, strict=True)) / len(p_s)
    cols = range(len(p_s[0]))
    intra = 1 - sum(_pearson([r[c] for r in p_s], [r[c] for r in p_t]) for c in cols) / len(cols)
    return temperature**2 * (beta * inter + gamma * intra)


@pytest.mark.parametrize(("beta", "gamma", "temperature"), [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0)])
def test_dist_loss_matches_hand_computation(beta, gamma, temperature):
    g = torch.Generator().manual_seed(int(beta * 10 + temperature))
    z_s, z_t = torch.randn(5, 4, generator=g) * 2, torch.randn(5, 4, generator=g) * 2
    expected = hand_dist(z_s.tolist(), z_t.tolist(), beta, gamma, temperature)
    got = dist_loss(z_s, z_t, beta=beta, gamma=gamma, temperature=temperature)
    assert got.item() == pytest.approx(expected, rel=1e-4)


def test_dist_relations_ignore_scale_and_shift_and_see_rank_reversal():
    p_t = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    # a student whose probabilities are an affine map of the teacher's (same relations): loss 0
    p_s = 0.5 * p_t + 0.5 / 3
    assert dist_loss(p_s.log(), p_t.log()).item() == pytest.approx(0.0, abs=1e-5)
    # one image (no intra term): 1 - Pearson; probabilities mirrored about their mean give 1 - (-1) = 2
    teacher, mirrored = torch.tensor([[1 / 2, 1 / 3, 1 / 6]]), torch.tensor([[1 / 6, 1 / 3, 1 / 2]])
    assert dist_loss(mirrored.log(), teacher.log(), beta=1.0, gamma=1.0).item() == pytest.approx(2.0, abs=1e-5)


def test_distiller_runs_dkd_with_its_warm_up_and_dist():
    from ofasearch.distill import DISTLoss, DKDLoss, OFADistiller

    g = torch.Generator().manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    images, labels = torch.rand(4, 3, 2, 2, generator=g), torch.tensor([0, 1, 2, 3])
    t = torch.randn(4, 5, generator=g)
    d = OFADistiller(
        student,
        None,
        5,
        input_size=(3, 2, 2),
        method="dkd",
        teacher_features=8,
        temperature=2.0,  # OFA/KD's; DKD has its own (paper default 4)
        logit_loss=DKDLoss(warmup_epochs=4),
        normalize=False,
    )
    full = dkd_loss(student(images), t, labels, 1.0, 8.0, 4.0)
    gt = F.cross_entropy(student(images), labels)
    for epoch, ramp in ((0, 0.25), (1, 0.5), (3, 1.0), (9, 1.0)):
        d.set_epoch(epoch)
        total, parts = d(images, labels, teacher_logits=t)
        assert total.item() == pytest.approx(gt.item() + ramp * full.item(), rel=1e-5)
        assert parts["kd"].item() == pytest.approx(full.item(), rel=1e-5)
    d = OFADistiller(
        student,
        None,
        5,
        input_size=(3, 2, 2),
        method="dist",
        teacher_features=8,
        normalize=False,
        kd_weight=2.0,
        logit_loss=DISTLoss(gamma=0.5, temperature=2.0),
    )
    total, _ = d(images, labels, teacher_logits=t)
    expected = gt + 2.0 * dist_loss(student(images), t, beta=1.0, gamma=0.5, temperature=2.0)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
