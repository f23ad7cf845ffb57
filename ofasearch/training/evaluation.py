"""Scoring the student: top-1 accuracy through the pipeline's eval transform, exact under DDP."""

from __future__ import annotations

import torch
from torch import nn

from ofasearch.data import ImageSet, Pipeline
from ofasearch.distill import OFADistiller
from ofasearch.training.ranks import all_sum, rank_and_size

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    distiller: OFADistiller,
    data: ImageSet,
    device: torch.device,
    batch_size: int = 256,
    *,
    pipeline: Pipeline,
    student: nn.Module | None = None,
) -> float:
    """Top-1 accuracy of the student alone (or ``student``, e.g. its EMA) on ``data``, through
    the pipeline's eval transform; exact under DDP (rank-strided shards)."""
    rank, world = rank_and_size()
    student = student if student is not None else distiller.student
    was_training = student.training
    student.eval()
    correct = total = 0
    index = torch.arange(rank, len(data), world)
    for start in range(0, len(index), batch_size):
        idx = index[start : start + batch_size]
        images = pipeline.eval_batch(data, idx).to(device)
        logits = student((images - distiller.student_mean) / distiller.student_std)
        correct += int((logits.argmax(-1).cpu() == data.labels[idx]).sum())
        total += len(idx)
    student.train(was_training)
    correct, total = all_sum([float(correct), float(total)], device)
    return correct / max(total, 1.0)
