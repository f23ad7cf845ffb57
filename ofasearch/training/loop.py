"""The one training loop: ``ofasearch train``, teacher training, local trials and Ray Train workers.

DDP-aware without depending on Ray: when ``torch.distributed`` is initialised (Ray Train sets it
up), the distiller is wrapped in DistributedDataParallel, each rank trains on its shard and every
metric is summed across ranks before it is reported.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from ofasearch.config import DistillSpec, OptimSpec
from ofasearch.data import ImageSet, Splits, augment
from ofasearch.distill import OFADistiller
from ofasearch.errors import SpecError
from ofasearch.training.logit_cache import LogitCache

__all__ = ["EpochReport", "FitResult", "evaluate", "fit", "pick_device", "seed_everything"]


@dataclass
class EpochReport:
    """What every epoch reports (to Tune, TensorBoard, the progress bar)."""

    epoch: int  # 1-based: the number of epochs done, ASHA's time attribute
    train_loss: float
    val_acc: float
    lr: float
    seconds: float  # wall time of this epoch
    parts: dict[str, float] = field(default_factory=dict)
    diverged: bool = False

    def as_metrics(self) -> dict[str, float]:
        out = {k: v for k, v in asdict(self).items() if k != "parts"}
        out.update({f"loss_{k}": v for k, v in self.parts.items()})
        return out


@dataclass
class FitResult:
    """The outcome of :func:`fit`; ``distiller.student`` holds the trained weights."""

    distiller: OFADistiller
    history: list[EpochReport]
    best_val_acc: float
    test_acc: float | None
    train_seconds: float
    diverged: bool


ReportFn = Callable[[EpochReport, OFADistiller], None]


def pick_device(gpus: float = 0.0) -> torch.device:
    """This rank's GPU when GPUs were asked for, else the CPU. Asking for a GPU where CUDA has
    none is an input error, not a silent fall-back to a run many times slower."""
    if gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SpecError([f"gpus_per_worker: {gpus:g} asked for, but CUDA sees no GPU on this machine"])
    rank = dist.get_rank() if dist.is_initialized() else 0
    return torch.device("cuda", rank % torch.cuda.device_count())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on norms, biases and tokens (1-d parameters), as timm does."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _optimizer(model: nn.Module, optim: OptimSpec) -> torch.optim.Optimizer:
    groups = _param_groups(model, float(optim.weight_decay))
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=float(optim.lr), momentum=float(optim.momentum), nesterov=True)
    return torch.optim.AdamW(groups, lr=float(optim.lr))


def _schedule(opt: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero, stepped per batch."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.no_grad()
def evaluate(distiller: OFADistiller, data: ImageSet, device: torch.device, batch_size: int = 256) -> float:
    """Top-1 accuracy of the student alone on ``data``; exact under DDP (rank-strided shards)."""
    rank, world = _world()
    student = distiller.student
    was_training = student.training
    student.eval()
    correct = total = 0
    index = torch.arange(rank, len(data), world)
    for start in range(0, len(index), batch_size):
        idx = index[start : start + batch_size]
        images = data.images[idx].to(device).float().div_(255.0)
        logits = student((images - distiller.student_mean) / distiller.student_std)
        correct += int((logits.argmax(-1).cpu() == data.labels[idx]).sum())
        total += len(idx)
    student.train(was_training)
    correct, total = _all_sum([float(correct), float(total)], device)
    return correct / max(total, 1.0)


def fit(
    distiller: OFADistiller,
    data: Splits,
    distill: DistillSpec,
    optim: OptimSpec,
    *,
    seed: int,
    device: torch.device,
    report: ReportFn | None = None,
    progress: bool = False,
    evaluate_test: bool = True,
    logit_cache: LogitCache | None = None,
) -> FitResult:
    """Train ``distiller``'s student (and exit branches) for ``optim.epochs`` epochs.

    Each epoch augments the training images with view ``epoch`` (replayable), reports an
    :class:`EpochReport` through ``report`` (on every rank: Ray's report is a barrier) and stops at
    the first non-finite loss, marking the run diverged. With ``logit_cache`` the teacher never
    runs: epoch e reads the cached logits of view ``e mod V`` and augments with that same view.
    """
    rank, world = _world()
    distiller.to(device)
    model: nn.Module = distiller
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            distiller, device_ids=[device.index] if device.type == "cuda" else None
        )
    opt = _optimizer(distiller, optim)
    batch_size, epochs = int(optim.batch_size), int(optim.epochs)
    sampler = DistributedSampler(range(len(data.train)), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    steps_per_epoch = max(1, math.ceil(len(sampler) / batch_size))
    sched = _schedule(opt, int(optim.warmup_epochs) * steps_per_epoch, epochs * steps_per_epoch)
    use_amp = bool(optim.amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)  # float16 autocast needs loss scaling
    clip = float(optim.clip_grad)
    bar = _progress(epochs * steps_per_epoch) if progress and rank == 0 else None
    history: list[EpochReport] = []
    best, diverged, train_seconds = 0.0, False, 0.0
    for epoch in range(epochs):
        start = time.perf_counter()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), dtype=torch.long)
        distiller.train()
        sums: dict[str, float] = {}
        n_seen = 0
        for b in range(steps_per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a single sample
                continue
            images = data.train.images[idx].to(device, non_blocking=True)
            view = epoch % logit_cache.views if logit_cache is not None else epoch
            if data.augment:
                images = augment(images, idx, seed=seed, view=view, flip=data.flip)
            else:
                images = images.float().div_(255.0)
            labels = data.train.labels[idx].to(device, non_blocking=True)
            cached = logit_cache.lookup(idx, view) if logit_cache is not None else None
            with torch.autocast(device.type, enabled=use_amp):
                loss, parts = model(images, labels, cached.to(device) if cached is not None else None)
            if not torch.isfinite(loss):
                diverged = True
            diverged = bool(_all_sum([float(diverged)], device)[0] > 0)
            if diverged:
                break
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if clip > 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(distiller.parameters(), clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            n_seen += len(idx)
            for key, value in parts.items():
                if key != "logits":
                    sums[key] = sums.get(key, 0.0) + float(value) * len(idx)
            sums["total"] = sums.get("total", 0.0) + float(loss.detach()) * len(idx)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{float(loss):.3f}")
        train_seconds += time.perf_counter() - start
        keys = sorted(sums)
        totals = _all_sum([sums[k] for k in keys] + [float(n_seen)], device)
        seen = max(totals[-1], 1.0)
        means = {k: v / seen for k, v in zip(keys, totals[:-1], strict=True)}
        val_acc = 0.0 if diverged else evaluate(distiller, data.val, device)
        best = max(best, val_acc)
        entry = EpochReport(
            epoch=epoch + 1,
            train_loss=means.pop("total", float("nan")) if not diverged else float("nan"),
            val_acc=val_acc,
            lr=opt.param_groups[0]["lr"],
            seconds=time.perf_counter() - start,
            parts=means,
            diverged=diverged,
        )
        history.append(entry)
        if bar is not None:
            bar.write(f"epoch {entry.epoch}/{epochs}: loss {entry.train_loss:.4f} val_acc {val_acc:.4f}")
        if report is not None:
            report(entry, distiller)
        if diverged:
            break
    if bar is not None:
        bar.close()
    test_acc = evaluate(distiller, data.test, device) if evaluate_test and not diverged else None
    return FitResult(distiller, history, best, test_acc, train_seconds, diverged)


def _progress(total: int):  # noqa: ANN202 - tqdm type
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, leave=False)
