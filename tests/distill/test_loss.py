import math

import pytest
import torch
import torch.nn.functional as F

from ofasearch import kd_loss, ofa_loss


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
    from issue 12: B=4, C=100, z_s[i,j] = 3 sin(100i+j), z_t[i,j] = 4 cos(0.7 (100i+j))."""
    n = 100 * torch.arange(4, dtype=torch.float64)[:, None] + torch.arange(100, dtype=torch.float64)[None]
    z_s, z_t = 3 * torch.sin(n), 4 * torch.cos(0.7 * n)
    got = ofa_loss(z_s, z_t, torch.tensor([3, 17, 42, 99]), eps=eps, temperature=temperature)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, rel=1e-12, abs=0)


def test_half_precision_logits_are_computed_in_float32():
    z = torch.randn(3, 5).half()
    assert ofa_loss(z, z, torch.tensor([0, 1, 2]), eps=1.5).dtype == torch.float32
