"""Exit branches: project an intermediate student feature into the logit space.

Built from the *measured* stage shape, so any timm student works without per-model code:
CNN students get depthwise-separable downsampling convs, token students (ViT, Swin, Mixer) get
2x2 patch merging plus transformer blocks. Branches are trained with the student and dropped
after training.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from ofasearch.models import StageShape

__all__ = ["ConvBranch", "TokenBranch", "num_heads_for"]


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
    """CNN exit branch for paper stage ``stage``: (4 - stage) separable blocks that halve the grid
    while it is larger than the last stage's and double the channels (the last block to
    ``width``); at stage 4 a 1x1 conv to ``width``. Then global average pool and a linear head."""

    def __init__(self, shape: StageShape, last: StageShape, stage: int, width: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        ch, size = shape.channels, max(shape.height, shape.width)
        n_blocks = 4 - stage
        for i in range(n_blocks):
            out = width if i == n_blocks - 1 else min(ch * 2, width)
            stride = 2 if size > max(last.height, last.width) else 1
            layers.append(SeparableBlock(ch, out, stride))
            ch, size = out, (size + 1) // 2 if stride == 2 else size
        if not layers:
            layers += [nn.Conv2d(ch, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def num_heads_for(width: int, head_dim: int = 32) -> int:
    """Largest head count <= width // head_dim that divides ``width`` (at least 1)."""
    for heads in range(max(1, width // head_dim), 0, -1):
        if width % heads == 0:
            return heads
    return 1


class PatchMerge(nn.Module):
    """Swin-style 2x2 merge on an NCHW grid (odd sizes padded), projected back to the same width."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduce = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        x = nn.functional.pad(x, (0, w % 2, 0, h % 2))
        x = torch.cat([x[..., 0::2, 0::2], x[..., 1::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 1::2]], dim=1)
        x = self.reduce(self.norm(x.permute(0, 2, 3, 1)))
        return x.permute(0, 3, 1, 2)


class TokenBranch(nn.Module):
    """Token exit branch: merge 2x2 patches until the grid is about the last stage's, run
    max(4 - stage, 1) transformer blocks at the stage's width, read out the class token when the
    student has prefix tokens (else the token mean), then a linear head."""

    def __init__(self, shape: StageShape, last: StageShape, stage: int, num_classes: int, prefix_tokens: int):
        super().__init__()
        dim = shape.channels
        merges, size = [], max(shape.height, shape.width)
        while size > max(last.height, last.width):
            merges.append(PatchMerge(dim))
            size = (size + 1) // 2
        self.merge = nn.Sequential(*merges)
        heads = num_heads_for(dim)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio=4.0) for _ in range(max(4 - stage, 1))])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.use_prefix = prefix_tokens > 0

    def forward(self, x: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.merge(x).flatten(2).transpose(1, 2)  # (B, L, D)
        if self.use_prefix and prefix is not None:
            tokens = torch.cat([prefix, tokens], dim=1)
        tokens = self.norm(self.blocks(tokens))
        pooled = tokens[:, 0] if self.use_prefix and prefix is not None else tokens.mean(dim=1)
        return self.head(pooled)
