"""Benchmark: images/s of ofasearch's training loop vs a bare OFADistiller step loop.

Both run the same teacher, student, batch and number of steps in this process; the bare loop
feeds pre-made in-memory tensors, so the ratio is the loop's overhead (augmentation, indexing,
metrics, scheduling). Also prints what the exit branches cost relative to the student alone.

    python scripts/bench_step.py            # 24 steps of batch 128 (about 2 minutes on 2 cores)
    python scripts/bench_step.py --smoke-test
"""

from __future__ import annotations

import argparse
import time

import torch

from ofasearch.config import DataSpec, OptimSpec
from ofasearch.data import find_fashion_mnist, load_splits
from ofasearch.distill import OFADistiller
from ofasearch.models import build_model
from ofasearch.training.loop import fit

STUDENT = ("vit_tiny_patch16_224", {"patch_size": 4, "embed_dim": 96, "depth": 4, "num_heads": 3})
TEACHER = "resnet10t"


def make_distiller(splits, method: str) -> OFADistiller:
    torch.manual_seed(0)
    kw = dict(num_classes=splits.num_classes, in_chans=splits.in_chans, image_size=splits.image_size)
    student = build_model(STUDENT[0], STUDENT[1], **kw)
    teacher = build_model(TEACHER, **kw) if method != "none" else None
    return OFADistiller(student, teacher, splits.num_classes, eps=1.2, method=method, input_size=splits.input_size)


def bare_images_per_second(splits, method: str, batch: int, steps: int) -> float:
    """The minimal loop a user would write around OFADistiller: tensors already in memory."""
    d = make_distiller(splits, method).train()
    opt = torch.optim.AdamW([p for p in d.parameters() if p.requires_grad], lr=1e-3)
    x = splits.train.images[:batch].float() / 255.0
    y = splits.train.labels[:batch]
    for step in range(steps + 1):
        if step == 1:  # first step warms up allocators
            start = time.perf_counter()
        loss, _ = d(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(d.parameters(), 5.0)
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def loop_images_per_second(splits, batch: int, steps: int) -> float:
    """ofasearch's own loop (fit) for exactly ``steps`` batches: one epoch of steps*batch images."""
    from ofasearch.data import ImageSet, Splits

    n = steps * batch
    sub = Splits(
        ImageSet(splits.train.images[:n], splits.train.labels[:n]),
        splits.val,
        splits.test,
        splits.num_classes,
        splits.in_chans,
        splits.image_size,
        splits.flip,
    )
    d = make_distiller(splits, "ofa")
    optim = OptimSpec(name="adamw", lr=1e-3, batch_size=batch, epochs=1, warmup_epochs=0, clip_grad=5.0)
    result = fit(d, sub, optim, seed=0, device=torch.device("cpu"), evaluate_test=False)
    return n / result.train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke-test", action="store_true", help="tiny run for CI")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    steps, batch = (3, 32) if args.smoke_test else (args.steps, args.batch)
    dataset = "fashion-mnist" if find_fashion_mnist() else "digits"
    splits = load_splits(DataSpec(dataset=dataset, train_subset=max(steps * batch + 200, 400), val_fraction=0.05))
    print(
        f"data {dataset} {splits.input_size}, teacher {TEACHER}, student {STUDENT[0]} {STUDENT[1]}, "
        f"batch {batch}, {steps} steps, {torch.get_num_threads()} threads"
    )
    bare = {m: bare_images_per_second(splits, m, batch, steps) for m in ("ofa", "kd", "none")}
    loop = loop_images_per_second(splits, batch, steps)
    print(f"bare OFADistiller loop : {bare['ofa']:8.1f} images/s")
    print(f"ofasearch fit() loop   : {loop:8.1f} images/s")
    print(f"ratio loop / bare      : {loop / bare['ofa']:8.3f}   (target >= 0.9)")
    print(f"student alone (none)   : {bare['none']:8.1f} images/s")
    print(f"vanilla KD (kd)        : {bare['kd']:8.1f} images/s")
    print(
        f"OFA step cost / student alone: {bare['none'] / bare['ofa']:.2f}x; "
        f"OFA / KD (branch cost): {bare['kd'] / bare['ofa']:.2f}x"
    )


if __name__ == "__main__":
    main()
