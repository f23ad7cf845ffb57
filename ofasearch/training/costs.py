"""Size and speed of a student: parameters, forward FLOPs and inference latency.

Accuracy alone does not pick a student: a search result is only useful next to what the student
costs to run. :func:`measure_cost` measures that once, before training, cheaply enough to run
in every trial (a few timed forwards; the median resists a noisy shared CPU).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["COST_COLUMNS", "ModelCost", "measure_cost"]

COST_COLUMNS = ("params", "flops", "latency_ms_b1", "latency_ms_b64", "device")
"""The keys :meth:`ModelCost.as_metrics` gives with the default batch sizes (1, 64): what every
search-trial report, ``trials.parquet`` and ``metrics.json`` carry."""


@dataclass(frozen=True)
class ModelCost:
    """What a model costs to run. ``flops`` are per image (batch 1, multiply-add = 2 FLOPs);
    ``latency_ms`` holds (batch size, median wall milliseconds of one eval forward) pairs."""

    params: int
    flops: int
    latency_ms: tuple[tuple[int, float], ...]
    device: str

    def latency(self, batch_size: int) -> float:
        """Median forward milliseconds at ``batch_size`` (which must have been measured)."""
        for batch, ms in self.latency_ms:
            if batch == batch_size:
                return ms
        measured = ", ".join(str(b) for b, _ in self.latency_ms)
        raise KeyError(f"latency at batch {batch_size} was not measured (measured: {measured})")

    @property
    def latency_ms_b1(self) -> float | None:
        return dict(self.latency_ms).get(1)

    @property
    def latency_ms_b64(self) -> float | None:
        return dict(self.latency_ms).get(64)

    def as_metrics(self) -> dict[str, Any]:
        """Flat keys for reports and tables: ``params``, ``flops``, ``latency_ms_b<N>``, ``device``."""
        out: dict[str, Any] = {"params": self.params, "flops": self.flops}
        out.update({f"latency_ms_b{batch}": ms for batch, ms in self.latency_ms})
        out["device"] = self.device
        return out


def _cpu_flash_attention_flops(q_shape, k_shape, v_shape, *_args: Any, out_shape: Any = None, **_kw: Any) -> int:
    """torch's counter has no formula for the CPU fused attention kernel (timm ViTs use it on CPU),
    so attention would count zero there: QK^T and (scores)V, 2 FLOPs per multiply-add."""
    b, heads, sq, d = q_shape
    sk, dv = k_shape[-2], v_shape[-1]
    return 2 * b * heads * sq * sk * (d + dv)


_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}


def _on_device(model: nn.Module, device: torch.device) -> bool:
    for t in (*model.parameters(), *model.buffers()):
        if t.device.type != device.type or (device.index is not None and t.device.index != device.index):
            return False
    return True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(model: nn.Module, x: torch.Tensor, device: torch.device, repeats: int, max_seconds: float) -> float:
    """Median of up to ``repeats`` timed forwards after one warm-up; stops early (keeping at least
    one timing) once ``max_seconds`` are spent, so a big model at batch 64 stays affordable."""
    # Not torch.utils.benchmark.Timer: its autoranges took 0.2-0.6 s per batch size, this loop 0.01-0.05 s (measured)
    model(x)  # warm-up: allocator, lazy init, kernel selection
    _sync(device)
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (not times or spent < max_seconds):
        start = time.perf_counter()
        model(x)
        _sync(device)
        elapsed = time.perf_counter() - start
        times.append(elapsed * 1000.0)
        spent += elapsed
    return statistics.median(times)


def measure_cost(
    model: nn.Module,
    input_size: tuple[int, int, int],
    device: torch.device | str,
    batch_sizes: tuple[int, ...] = (1, 64),
    repeats: int = 10,
    *,
    max_seconds: float = 0.5,
) -> ModelCost:
    """Count ``model``'s parameters and per-image forward FLOPs and time its eval forward at each
    of ``batch_sizes`` on ``device`` (where the model must already be).

    Measured in eval mode under ``no_grad`` on random input from a private generator (the global
    RNG, hence training, is untouched); every submodule's train/eval mode is restored afterwards.
    ``max_seconds`` caps the timed forwards per batch size. Counts only ``model``'s own
    parameters: pass the bare student, not a distiller with exit branches.
    """
    device = torch.device(device)
    if len(input_size) != 3 or any(int(s) < 1 for s in input_size):
        raise ValueError(f"input_size must be (channels, height, width) >= 1, got {tuple(input_size)}")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be one or more sizes >= 1, got {tuple(batch_sizes)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if max_seconds < 0:
        raise ValueError(f"max_seconds must be >= 0, got {max_seconds}")
    if not _on_device(model, device):
        raise ValueError(f"model is not (entirely) on {device}; move it there before measuring")
    params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(0)
    modes = [(m, m.training) for m in model.modules()]  # per module: some may be frozen in eval
    model.eval()
    try:
        with torch.no_grad():
            one = torch.randn(1, *input_size, generator=gen).to(device)
            with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
                model(one)
            flops = int(counter.get_total_flops())
            latency = []
            for batch in dict.fromkeys(int(b) for b in batch_sizes):  # unique, in the given order
                x = one if batch == 1 else torch.randn(batch, *input_size, generator=gen).to(device)
                latency.append((batch, _median_ms(model, x, device, repeats, max_seconds)))
    finally:
        for module, training in modes:
            module.training = training
    return ModelCost(params=params, flops=flops, latency_ms=tuple(latency), device=str(device))
