"""Where a training process stands: its device, its rank among DDP workers, its share of the
global batch, and sums over every rank (one process without DDP is rank 0 of 1)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from ofasearch.config.schema import batch_split_problem
from ofasearch.errors import SpecError

__all__ = ["all_sum", "per_worker_batch", "pick_device", "rank_and_size"]


def pick_device(gpus: float = 0.0) -> torch.device:
    """The current CUDA device when GPUs were asked for, else the CPU (one process, no Ray: a Ray
    Train worker takes ``ray.train.torch.get_device()`` instead). Asking for a GPU where CUDA has
    none is an input error, not a silent fall-back to a run many times slower."""
    if gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SpecError([f"gpus_per_worker: {gpus:g} asked for, but CUDA sees no GPU on this machine"])
    return torch.device("cuda", torch.cuda.current_device())


def per_worker_batch(global_batch: int, workers: int) -> int:
    """Each DDP worker's share of the global ``optim.batch_size``: a config searched on one worker
    then takes the same steps on N (its shards together are the one-worker batch)."""
    problem = batch_split_problem(global_batch, workers)
    if problem:
        raise SpecError([problem])
    return global_batch // workers


def rank_and_size() -> tuple[int, int]:
    """(rank, number of workers) of this process."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over every rank (as they are without DDP)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
