"""Benchmark: training-loop seconds per epoch with the teacher-logit cache vs the live teacher.

A heavy teacher (ResNet-50) and a small ViT student at 32 px, the same images, views, seed and
loop (`fit`); both runs happen in this process, so the ratio compares like with like. Also
prints the cache build time, its size per 10k images and view, and the speed-up predicted for a
GPU from FLOP counts (torch.utils.flop_counter): (student step + teacher forward) / student step.

    python scripts/bench_teacher_cache.py               # 1024 images, 2 epochs (a few minutes)
    python scripts/bench_teacher_cache.py --smoke-test  # tiny, for CI
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ofasearch.config import DataSpec, OptimSpec
from ofasearch.data import find_fashion_mnist, load_splits
from ofasearch.distill import OFADistiller
from ofasearch.models import build_model
from ofasearch.training.logit_cache import open_or_build
from ofasearch.training.loop import fit

TEACHER = "resnet50"
STUDENT = ("vit_tiny_patch16_224", {"patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 2})


def models(splits):
    torch.manual_seed(0)
    kw = dict(num_classes=splits.num_classes, in_chans=splits.in_chans, image_size=splits.image_size)
    return build_model(STUDENT[0], STUDENT[1], **kw), build_model(TEACHER, **kw).eval()


def epoch_seconds(splits, optim, cache) -> float:
    student, teacher = models(splits)
    d = OFADistiller(
        student,
        None if cache else teacher,
        splits.num_classes,
        eps=1.2,
        input_size=splits.input_size,
        teacher_features=teacher.num_features,
    )
    result = fit(d, splits, optim, seed=0, device=torch.device("cpu"), evaluate_test=False, logit_cache=cache)
    return result.train_seconds / len(result.history)


def flops(splits, batch: int) -> tuple[float, float]:
    """Forward FLOPs of the teacher, and FLOPs of one OFA student step (forward + backward)."""
    student, teacher = models(splits)
    d = OFADistiller(
        student, None, splits.num_classes, eps=1.2, input_size=splits.input_size, teacher_features=teacher.num_features
    )
    x = torch.rand(batch, *splits.input_size)
    y = torch.randint(0, splits.num_classes, (batch,))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        t_logits = teacher(x)
    teacher_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        loss, _ = d(x, y, teacher_logits=t_logits)
        loss.backward()
    return teacher_flops, counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke-test", action="store_true", help="tiny run for CI")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    images, epochs, batch = (96, 1, 32) if args.smoke_test else (args.images, args.epochs, 128)
    dataset = "fashion-mnist" if find_fashion_mnist() else "digits"
    splits = load_splits(
        DataSpec(dataset=dataset, image_size=32, train_subset=images + 64, val_fraction=64 / (images + 64))
    )
    optim = OptimSpec(name="adamw", lr=1e-3, batch_size=batch, epochs=epochs, warmup_epochs=0)
    print(
        f"{dataset} {len(splits.train)} images {splits.input_size}, teacher {TEACHER}, student {STUDENT[0]} "
        f"{STUDENT[1]}, batch {batch}, {epochs} epoch(s), {torch.get_num_threads()} threads"
    )
    with tempfile.TemporaryDirectory() as tmp:
        _, teacher = models(splits)
        start = time.perf_counter()
        cache = open_or_build(teacher, splits, Path(tmp) / "cache", seed=0, views=epochs)
        build = time.perf_counter() - start
        per_10k = cache.size_bytes() / cache.num_samples / cache.views * 10_000
        live = epoch_seconds(splits, optim, None)
        cached = epoch_seconds(splits, optim, cache)
    teacher_flops, student_flops = flops(splits, batch)
    print(f"live teacher    : {live:8.2f} s/epoch")
    print(f"logit cache     : {cached:8.2f} s/epoch")
    print(f"speed-up        : {live / cached:8.2f}x   (target >= 1.5x on this CPU)")
    print(
        f"cache build     : {build:8.2f} s for {cache.num_samples} images x {cache.views} views "
        f"({build / (cache.num_samples * cache.views) * 1e3:.2f} ms/image-view)"
    )
    print(f"cache size      : {per_10k / 1e6:8.3f} MB per 10k images per view ({splits.num_classes} classes, float16)")
    print(
        f"FLOPs per batch : teacher forward {teacher_flops / 1e9:.2f} G, OFA student step {student_flops / 1e9:.2f} G"
    )
    print(f"predicted GPU speed-up (FLOP-bound): {(teacher_flops + student_flops) / student_flops:.2f}x")


if __name__ == "__main__":
    main()
