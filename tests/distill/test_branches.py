"""Exit branches follow the reference implementation (Hao840/OFAKD at f7bb896): their sizes for the
paper's pairs, and the token-branch rules (merges, widths, blocks, readout, init).

Distillers for the 224-px pairs are built on PyTorch's meta device: shapes are measured by a real
forward of the real timm student, without weight memory or compute, so the six pairs take about a
second. Only the teacher's final width matters to a branch."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

from ofasearch import OFADistiller
from ofasearch.distill.branches import ConvBranch, PatchMerge, TokenBranch, merge_count
from ofasearch.models import build_model

# Parameters per branch, stages 1-4, 100 classes, 224 px: counted by building the reference's own
# OFA module (timm 0.6.5 and 1.0.31 agree).
REFERENCE = {
    ("swin_tiny_patch4_window7_224", "resnet18"): (411_748, 397_924, 345_700, 470_884),
    ("vit_small_patch16_224", "resnet18"): (320_100, 306_276, 254_052, 313_956),
    ("vit_small_patch16_224", "mobilenetv2_100"): (275_044, 221_796, 264_676, 1_767_780),
    ("convnext_tiny", "deit_tiny_patch16_224"): (1_501_156, 1_056_868, 612_580, 612_580),
    ("convnext_tiny", "resmlp_12_224"): (5_951_332, 4_178_020, 2_404_708, 2_404_708),
    ("resnet50", "deit_tiny_patch16_224"): (1_501_156, 1_056_868, 612_580, 612_580),
}
# The paper's Swin-P student (the reference's swin_pico, registered by ofasearch.models.zoo): its
# branch sizes worked out by hand from the reference's rule (final width 384): stage 1: 3 merges
# (48->384, 384->384 twice) + 3 Blocks(384) + head; stage 4: 1 Block + head.
SWIN_PICO = "swin_pico_patch4_window7_224"
SWIN_PICO_BRANCHES = (6_618_340, 4_326_244, 2_108_260, 1_811_812)


def _branch_sizes(teacher: str, student: str, student_kwargs: dict | None = None) -> tuple[int, ...]:
    with torch.device("meta"):
        width = timm.create_model(teacher, num_classes=100).num_features
        net = timm.create_model(student, num_classes=100, **(student_kwargs or {}))
        d = OFADistiller(net, None, 100, teacher_features=width, input_size=(3, 224, 224))
    return tuple(sum(p.numel() for p in d.branches[str(k)].parameters()) for k in (1, 2, 3, 4))


@pytest.mark.parametrize(("teacher", "student"), list(REFERENCE))
def test_branch_sizes_match_the_reference_within_one_percent(teacher, student):
    got = _branch_sizes(teacher, student)
    for stage, (n, ref) in enumerate(zip(got, REFERENCE[teacher, student], strict=True), start=1):
        assert abs(n - ref) <= 0.01 * ref, f"stage {stage}: {n:,} parameters, reference {ref:,}"


def test_swin_student_branches_run_at_the_final_width():
    got = _branch_sizes("convnext_tiny", SWIN_PICO)
    assert got == SWIN_PICO_BRANCHES


@pytest.mark.parametrize(
    ("grid", "last_grid", "merges"),
    [
        (14, 14, 1),  # 224-px DeiT/ResMLP: 14 -> 7
        (56, 7, 3),  # 224-px Swin stage 1
        (28, 7, 2),
        (7, 7, 0),
        (8, 8, 0),  # 32-px ViT, patch 4: 8x8 is already about 7x7 (the reference: floor(log2 8/7) = 0)
        (24, 24, 1),  # 384-px ViT: 24 -> 12
        (96, 12, 3),  # 384-px Swin stage 1: 96 -> 12, its last grid
        (8, 1, 3),  # 32-px Swin ends at 1x1: 7x7 does not apply, merge to the last stage's grid
        (2, 1, 1),
        (1, 1, 0),
    ],
)
def test_merge_count(grid, last_grid, merges):
    assert merge_count(grid, last_grid) == merges


def _swin_pico_distiller() -> OFADistiller:
    with torch.device("meta"):
        net = timm.create_model(SWIN_PICO, num_classes=100)
        return OFADistiller(net, None, 100, teacher_features=768, input_size=(3, 224, 224))


def test_token_branch_structure_follows_the_reference():
    d = _swin_pico_distiller()
    for stage, n_merges in zip((1, 2, 3, 4), (3, 2, 1, 0), strict=True):
        branch = d.branches[str(stage)]
        assert isinstance(branch, TokenBranch)
        merges = [m for m in branch.merge if isinstance(m, PatchMerge)]
        assert len(merges) == n_merges
        assert [m.reduction.out_features for m in merges] == [384] * n_merges, "first merge to the final width"
        # GELU after each merge but the last of several; a single merge keeps its GELU
        expected = [nn.GELU] * (n_merges - 1) + [nn.Identity] if n_merges > 1 else [nn.GELU] * n_merges
        assert [type(m.act) for m in merges] == expected
        assert len(branch.blocks) == max(4 - stage, 1)
        assert all(b.attn.num_heads == 4 and b.norm1.normalized_shape == (384,) for b in branch.blocks)
        assert branch.head.in_features == 384
    assert all(not isinstance(m, nn.LayerNorm) for m in d.branches["4"].children()), "no norm after the blocks"


def test_mobilenetv2_stage_four_is_after_the_conv_head():
    with torch.device("meta"):
        net = timm.create_model("mobilenetv2_100", num_classes=100)
        d = OFADistiller(net, None, 100, teacher_features=384, input_size=(3, 224, 224))
    conv = d.branches["4"].features[0]
    assert isinstance(conv, nn.Conv2d)
    assert (conv.in_channels, conv.out_channels) == (1280, 1280)
    assert conv.kernel_size == (1, 1), "stage 4: a biased 1x1 conv, no BN/ReLU"
    assert conv.bias is not None, "stage 4: a biased 1x1 conv, no BN/ReLU"
    assert len(d.branches["4"].features) == 1


SMALL = 32


@pytest.fixture(scope="module")
def small_deit() -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"patch_size": 2, "depth": 4}
    return build_model("deit_tiny_patch16_224", kwargs, num_classes=10, in_chans=3, image_size=SMALL)


def test_class_token_is_carried_past_the_merges_and_read_out(small_deit):
    """A 32-px DeiT with patch 2 has a 16x16 grid, merged once to 8x8; the class token is set aside
    during the merge, put back in front and read out."""
    d = OFADistiller(small_deit, None, 10, teacher_features=64, input_size=(3, SMALL, SMALL)).eval()
    branch = d.branches["1"]
    assert branch.class_token
    assert len(branch.merge) == 1
    spatial = torch.randn(2, 192, 16, 16)
    prefix = torch.randn(2, 1, 192)
    out = branch(spatial, prefix)
    assert out.shape == (2, 10)
    assert not torch.allclose(out, branch(spatial, prefix + 1.0)), "the class token reaches the head"
    # The readout is token 0 after the blocks: the same as running the blocks by hand.
    tokens = torch.cat([prefix, branch.merge(spatial).flatten(2).transpose(1, 2)], dim=1)
    assert torch.allclose(out, branch.head(branch.blocks(tokens)[:, 0]), atol=1e-6)


def test_without_a_class_token_the_token_mean_is_read_out():
    kwargs = {"patch_size": 4, "num_blocks": 4, "embed_dim": 64}
    mixer = build_model("MlpMixer", kwargs, num_classes=10, in_chans=3, image_size=SMALL)
    d = OFADistiller(mixer, None, 10, teacher_features=64, input_size=(3, SMALL, SMALL)).eval()
    branch = d.branches["1"]
    assert not branch.class_token
    spatial = torch.randn(2, 64, 8, 8)
    tokens = branch.merge(spatial).flatten(2).transpose(1, 2)
    assert torch.allclose(branch(spatial), branch.head(branch.blocks(tokens).mean(dim=1)), atol=1e-6)


def test_branch_init_follows_the_reference():
    """trunc_normal(std 0.02) Linear weights with zero bias; kaiming fan-out convs; BN at identity."""
    torch.manual_seed(0)
    student = build_model("resnet18", num_classes=100, in_chans=3, image_size=64)
    d = OFADistiller(student, None, 100, stages=(1, 4), teacher_features=768, input_size=(3, 64, 64))
    assert all(isinstance(b, ConvBranch) for b in d.branches.values())
    linears = [m for b in d.branches.values() for m in b.modules() if isinstance(m, nn.Linear)]
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert weights.std().item() == pytest.approx(0.02, rel=0.05)
    assert all(m.bias is None or not m.bias.any() for m in linears)
    pw = d.branches["1"].features[0][1]  # pointwise conv 64 -> 64: fan-out 64
    assert pw.weight.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.1)
    head_conv = d.branches["4"].features[0]  # 1x1 conv 512 -> 768 with bias
    assert head_conv.weight.std().item() == pytest.approx(math.sqrt(2 / 768), rel=0.05)
    assert not head_conv.bias.any()
    bns = [m for b in d.branches.values() for m in b.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    assert all(m.weight.eq(1).all() and not m.bias.any() for m in bns)
