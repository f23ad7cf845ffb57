"""Exit branches: project an intermediate student feature into the logit space.

The rules are those of the authors' reference implementation (Hao840/OFAKD at f7bb896,
``distillers/ofa.py``), re-derived here from the *measured* stage shape so any timm student works
without per-model code; at 224 px they give the reference's parameter counts for the paper's
pairs (``tests/distill/test_branches.py``).

- CNN students (:class:`ConvBranch`): stage k < 4 gets (4 - k) depthwise-separable blocks that
  double the channels (the last one to ``width`` = max(student, teacher) final width); stage 4 a
  biased 1x1 conv to ``width``. Then global average pool and a linear head.
- Token students (:class:`TokenBranch`, ViT/DeiT, Swin, Mixer/ResMLP): Swin-style 2x2 patch merges
  down to a 7x7 grid, the first one projecting to the student's final width; max(4 - k, 1) timm
  ``Block(num_heads=4)`` at that width; the class token read out (the token mean without one);
  a linear head.

Where the reference has no rule (other image sizes, odd grids, widths it never meets), the
choices are written at :func:`merge_count` and :class:`TokenBranch`.
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from ofasearch.models import StageShape

__all__ = ["REFERENCE_GRID", "ConvBranch", "TokenBranch", "init_branch", "merge_count", "num_heads_for"]

REFERENCE_GRID = 7
"""The token grid the reference merges down to (224 px / 32, the last grid of a stride-32 model)."""


def init_branch(module: nn.Module) -> None:
    """The reference's branch init: trunc_normal(0.02) Linear weights, kaiming fan-out convs,
    zero biases, BatchNorm at identity."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SeparableBlock(nn.Sequential):
    """dw3x3 (stride s) -> pw1x1 -> BN -> ReLU -> dw3x3 -> pw1x1 (to ``out_ch``) -> BN -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__(
            nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False),
            nn.Conv2d(in_ch, in_ch, 1, bias=False),
            nn.BatchNorm2d(in_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, in_ch, 3, 1, 1, groups=in_ch, bias=False),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class ConvBranch(nn.Module):
    """CNN exit branch for paper stage ``stage``: (4 - stage) separable blocks, each doubling the
    channels and the last one going to ``width``; at stage 4 a 1x1 conv (with bias, no BN/ReLU) to
    ``width``. Then global average pool and a linear head.

    The reference's blocks always have stride 2 (56 -> 7 for a 224-px ResNet stage 1); here a block
    halves the grid only while it is larger than the last stage's, so small images (a ResNet at
    32 px ends at 1x1) are not padded down to nothing. Parameter counts do not depend on it.
    """

    def __init__(self, shape: StageShape, last: StageShape, stage: int, width: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        ch, size = shape.channels, max(shape.height, shape.width)
        n_blocks = 4 - stage
        for i in range(n_blocks):
            out = width if i == n_blocks - 1 else ch * 2
            stride = 2 if size > max(last.height, last.width) else 1
            layers.append(SeparableBlock(ch, out, stride))
            ch, size = out, (size + 1) // 2 if stride == 2 else size
        if not layers:
            layers.append(nn.Conv2d(ch, width, 1))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)
        init_branch(self)

    def forward(self, x: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def num_heads_for(width: int, wanted: int = 4) -> int:
    """``wanted`` heads (the reference's 4) when they divide ``width``, else the largest count
    below it that does (at least 1)."""
    for heads in range(min(wanted, width), 0, -1):
        if width % heads == 0:
            return heads
    return 1


def merge_count(grid: int, last_grid: int, target: int = REFERENCE_GRID) -> int:
    """How many 2x2 merges a token branch makes on a ``grid``-sized map.

    The reference: floor(log2(grid / 7)), at least 0 — one merge 14 -> 7 for a 224-px DeiT,
    three 56 -> 7 for a Swin stage 1, none for a grid of 8 to 13. Where 7x7 does not apply
    because the student itself ends on a smaller grid (a Swin at 32 px ends at 1x1), the target
    is the last stage's grid instead, as the CNN branch halves down to it; this changes nothing
    whenever the last grid is 7 or larger, which includes every 224-px student.
    """
    target = max(1, min(target, last_grid))
    merges = 0
    while target * 2 ** (merges + 1) <= grid:
        merges += 1
    return merges


class PatchMerge(nn.Module):
    """Swin-style 2x2 merge on an NCHW grid: LayerNorm(4d) -> Linear(4d -> out, no bias) -> act.
    Odd sizes are zero-padded (the reference requires even grids)."""

    def __init__(self, dim: int, out: int, act: bool):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out, bias=False)
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        x = nn.functional.pad(x, (0, w % 2, 0, h % 2))
        x = torch.cat([x[..., 0::2, 0::2], x[..., 1::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 1::2]], dim=1)
        x = self.act(self.reduction(self.norm(x.permute(0, 2, 3, 1))))
        return x.permute(0, 3, 1, 2)


class TokenBranch(nn.Module):
    """Token exit branch for paper stage ``stage`` of a student whose final width is ``width``.

    :func:`merge_count` 2x2 merges, the first projecting the stage's width to ``width`` (GELU
    after each merge except the last of several); then max(4 - stage, 1) timm ``Block(width,
    num_heads=4)``; prefix tokens are set aside during the merges and put back in front of the
    merged tokens; the class token is read out when the student has one, else the mean over
    the tokens; a linear head. No norm after the blocks (as in the reference).

    Beyond the reference, which never meets these cases: a stage narrower than ``width`` that
    needs no merge gets a Linear projection to ``width``, as do prefix tokens narrower than
    ``width`` (ViT widths are all equal, so neither occurs for the paper's students); a width
    that 4 does not divide gets the largest head count below 4 that divides it.
    """

    def __init__(
        self,
        shape: StageShape,
        last: StageShape,
        stage: int,
        width: int,
        num_classes: int,
        prefix_tokens: int = 0,
        class_token: bool = False,
    ):
        super().__init__()
        dim = shape.channels
        n = merge_count(max(shape.height, shape.width), max(last.height, last.width))
        merges: list[nn.Module] = [
            PatchMerge(dim if i == 0 else width, width, act=i == 0 or i < n - 1) for i in range(n)
        ]
        if not merges and dim != width:
            merges.append(_ChannelLinear(dim, width))
        self.merge = nn.Sequential(*merges)
        self.prefix_proj = nn.Linear(dim, width) if prefix_tokens and dim != width else nn.Identity()
        self.blocks = nn.Sequential(*[Block(width, num_heads_for(width)) for _ in range(max(4 - stage, 1))])
        self.head = nn.Linear(width, num_classes)
        self.class_token = class_token and prefix_tokens > 0
        init_branch(self)

    def forward(self, x: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.merge(x).flatten(2).transpose(1, 2)  # (B, L, D)
        if prefix is not None:
            tokens = torch.cat([self.prefix_proj(prefix), tokens], dim=1)
        tokens = self.blocks(tokens)
        pooled = tokens[:, 0] if self.class_token and prefix is not None else tokens.mean(dim=1)
        return self.head(pooled)


class _ChannelLinear(nn.Module):
    """A Linear over the channels of an NCHW map (width change without a merge)."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.proj = nn.Linear(dim, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
