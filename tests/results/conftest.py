"""Rows of a small finished search, as the recorder writes them to ``trials.parquet``: two pairs,
both baselines of each, and search trials that completed, were stopped by ASHA, diverged or failed."""

from __future__ import annotations

from typing import Any

import pytest

VIT = "vit_tiny_patch16_224(depth=4,embed_dim=48,num_heads=2,patch_size=4)"
MIXER = "MlpMixer(embed_dim=48,num_blocks=2,patch_size=4)"
MAX_EPOCHS = 3


def _row(
    trial_id: str,
    role: str,
    status: str,
    student: str,
    method: str,
    val_acc: float,
    epochs: int,
    seconds: float,
    latency: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "trial_id": trial_id,
        "role": role,
        "status": status,
        "teacher": "resnet10t",
        "student": student,
        "method": method,
        "val_acc": val_acc,
        "val_acc_last": val_acc,
        "epochs": epochs,
        "seconds": seconds,
        "seed": 0,
        "error": "loss became NaN/inf; trial stopped" if status == "diverged" else None,
        "teacher_cache": method != "none",
        "latency_ms_b1": latency,
        "params": 40_000 if student == MIXER else 90_000,
        "device": "cpu",
        "config": f"name: {trial_id}\n",
        **extra,
    }


@pytest.fixture
def trial_rows() -> list[dict[str, Any]]:
    search = {"distill.eps": 1.2, "distill.stages": "3,4", "optim.lr": 0.002}
    return [
        _row("base_0", "baseline", "completed", VIT, "none", 0.11, 3, 1.0, 2.0),
        _row("base_1", "baseline", "completed", VIT, "kd", 0.15, 3, 2.0, 2.4),
        _row("base_2", "baseline", "completed", MIXER, "none", 0.52, 3, 1.0, 0.5),
        _row("base_3", "baseline", "completed", MIXER, "kd", 0.53, 3, 1.0, 0.7),
        _row("mix_best", "search", "completed", MIXER, "ofa", 0.63, 3, 4.0, 0.6, **search),
        _row("mix_tie", "search", "completed", MIXER, "ofa", 0.63, 3, 2.0, 0.6, **search),
        _row("vit_done", "search", "completed", VIT, "ofa", 0.26, 3, 4.0, 2.2, **search),
        _row("vit_stop", "search", "stopped", VIT, "ofa", 0.70, 1, 1.0, 2.2, **search),
        _row("vit_nan", "search", "diverged", VIT, "ofa", 0.80, 3, 3.0, 2.2, **search),
        _row("mix_err", "search", "error", MIXER, "ofa", 0.0, 0, 0.0, None, **search),
    ]
