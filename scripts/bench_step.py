"""Benchmark: images/s of ofasearch's training loop vs a bare OFADistiller step loop.

Both run the same teacher, student, batch and number of steps in this process; the bare loop
feeds pre-made in-memory tensors, so the ratio is the loop's overhead (augmentation, indexing,
metrics, scheduling). Also prints what the exit branches cost relative to the student alone, and
the speed options of ``ofasearch.training.speed`` side by side on the same steps: img/s of the
student-alone, KD and OFA steps plain, compiled, under mixed precision (bf16 autocast; fp16 on a
GPU without bf16) and, on CUDA, channels-last, each as a ratio to the plain step (the
compile time is printed apart: it is paid once per run); then fit() from a teacher-logit cache
with the data on the host and on the device (``optim.data_on_device``).

    python scripts/bench_step.py            # 24 steps of batch 128 (about 2 minutes on 2 cores)
    python scripts/bench_step.py --image-size 32 --batch 256   # a CIFAR-sized step
    python scripts/bench_step.py --smoke-test
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ofasearch.config import DataSpec, OptimSpec
from ofasearch.data import find_fashion_mnist, load_splits, resize_images
from ofasearch.distill import OFADistiller
from ofasearch.models import build_model
from ofasearch.training.logit_cache import LogitCache, open_or_build
from ofasearch.training.loop import fit
from ofasearch.training.speed import compile_distiller, to_channels_last

STUDENT = ("vit_tiny_patch16_224", {"patch_size": 4, "embed_dim": 96, "depth": 4, "num_heads": 3})
TEACHER = "resnet10t"
CPU = torch.device("cpu")


def make_distiller(splits, method: str) -> OFADistiller:
    torch.manual_seed(0)
    kw = dict(num_classes=splits.num_classes, in_chans=splits.in_chans, image_size=splits.image_size)
    student = build_model(STUDENT[0], STUDENT[1], **kw)
    teacher = build_model(TEACHER, **kw) if method != "none" else None
    return OFADistiller(student, teacher, splits.num_classes, eps=1.2, method=method, input_size=splits.input_size)


def bare_images_per_second(
    splits,
    method: str,
    batch: int,
    steps: int,
    *,
    device: torch.device = CPU,
    compiled: bool = False,
    autocast: torch.dtype | None = None,
    channels_last: bool = False,
    timings: dict | None = None,
) -> float:
    """The minimal loop a user would write around OFADistiller: tensors already in memory (on
    ``device``), optionally with the loop's speed options. ``timings["first_step"]`` gets the
    first step's seconds (the compile, when compiled)."""
    d = make_distiller(splits, method).to(device).train()
    if channels_last:
        to_channels_last(d, device)
    if compiled:
        compile_distiller(d)
    opt = torch.optim.AdamW([p for p in d.parameters() if p.requires_grad], lr=1e-3)
    # at the run's size, as the loop sees them (digits are stored at 8 px)
    x = (resize_images(splits.train.images[:batch], splits.image_size).float() / 255.0).to(device)
    if channels_last and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = splits.train.labels[:batch].to(device)
    scaler = torch.amp.GradScaler(device.type) if autocast == torch.float16 else None
    first = time.perf_counter()
    for step in range(steps + 1):
        if step == 1:  # first step warms up allocators (and compiles)
            _sync(device)
            start = time.perf_counter()
            if timings is not None:
                timings["first_step"] = start - first
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            loss, _ = d(x, y)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(d.parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(d.parameters(), 5.0)
            opt.step()
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def options_table(splits, batch: int, steps: int, device: torch.device, compile_too: bool = True) -> None:
    """img/s of each step kind under each speed option, as ratios to the plain step."""
    cuda_bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported()
    half = torch.bfloat16 if cuda_bf16 else torch.float16
    options: dict[str, dict] = {"plain": {}}
    if compile_too:  # about a minute per step kind on 2 CPU cores: not in the smoke test
        options["compile"] = {"compiled": True}
    options[f"amp {str(half).removeprefix('torch.')}"] = {"autocast": half}
    if device.type == "cuda":
        options["channels_last"] = {"channels_last": True}
        if compile_too:
            options["all three"] = {"compiled": True, "autocast": half, "channels_last": True}
    names = {"none": "student alone", "kd": "vanilla KD", "ofa": "OFA"}
    print(f"\nspeed options on {device} (img/s, ratio to plain; {steps} steps of batch {batch}, after 1 warm-up step):")
    print(f"{'step':<14}" + "".join(f"{name:>22}" for name in options))
    for method, label in names.items():
        cells, compile_s = [], None
        for name, kw in options.items():
            timing: dict = {}
            value = bare_images_per_second(splits, method, batch, steps, device=device, timings=timing, **kw)
            if name == "plain":
                plain = value
            if name == "compile":
                compile_s = timing["first_step"]
            cells.append(f"{value:9.1f} ({value / plain:4.2f}x)")
        compile_note = f"   first compiled step {compile_s:.1f} s" if compile_s is not None else ""
        print(f"{label:<14}" + "".join(f"{c:>22}" for c in cells) + compile_note)


def _first_images(splits, n: int):
    from ofasearch.data import ImageSet, Splits

    train = ImageSet(splits.train.images[:n], splits.train.labels[:n])
    return Splits(train, splits.val, splits.test, splits.num_classes, splits.in_chans, splits.image_size, splits.flip)


def loop_images_per_second(
    splits,
    batch: int,
    steps: int,
    *,
    device: torch.device = CPU,
    data_on_device: str = "off",
    logit_cache: LogitCache | None = None,
) -> float:
    """ofasearch's own loop (fit) for exactly ``steps`` batches: one epoch of steps*batch images."""
    n = steps * batch
    d = make_distiller(splits, "ofa")
    optim = OptimSpec(
        name="adamw",
        lr=1e-3,
        batch_size=batch,
        epochs=1,
        warmup_epochs=0,
        clip_grad=5.0,
        compile="off",
        data_on_device=data_on_device,
    )
    result = fit(
        d, _first_images(splits, n), optim, seed=0, device=device, evaluate_test=False, logit_cache=logit_cache
    )
    return n / result.train_seconds


def placement_line(splits, batch: int, steps: int, device: torch.device) -> None:
    """fit() from the teacher-logit cache with the train set and cache on the host (copied per
    batch) and on the device (``optim.data_on_device``), measured one after the other."""
    sub = _first_images(splits, steps * batch)
    teacher = make_distiller(splits, "kd").teacher
    with tempfile.TemporaryDirectory() as folder:
        cache = open_or_build(teacher, sub, Path(folder) / "cache", seed=0, views=1)
        host = loop_images_per_second(splits, batch, steps, device=device, data_on_device="off", logit_cache=cache)
        resident = loop_images_per_second(splits, batch, steps, device=device, data_on_device="on", logit_cache=cache)
    print(
        f"\nfit() from the logit cache on {device}: data on the host {host:8.1f} img/s, "
        f"on the device {resident:8.1f} img/s ({resident / host:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke-test", action="store_true", help="tiny run for CI")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, help="resize the images to this many pixels (default: the data's)")
    parser.add_argument("--no-options", action="store_true", help="skip the compile / AMP / channels-last table")
    args = parser.parse_args()
    steps, batch = (3, 32) if args.smoke_test else (args.steps, args.batch)
    dataset = "fashion-mnist" if find_fashion_mnist() else "digits"
    size = {} if args.image_size is None else {"image_size": args.image_size}
    splits = load_splits(
        DataSpec(dataset=dataset, train_subset=max(steps * batch + 200, 400), val_fraction=0.05, **size)
    )
    print(
        f"data {dataset} {splits.input_size}, teacher {TEACHER}, student {STUDENT[0]} {STUDENT[1]}, "
        f"batch {batch}, {steps} steps, {torch.get_num_threads()} threads"
    )
    bare = {m: bare_images_per_second(splits, m, batch, steps) for m in ("ofa", "kd", "none")}
    loop = loop_images_per_second(splits, batch, steps)
    print(f"on the CPU ({torch.get_num_threads()} threads), both loops on the same steps:")
    print(f"bare OFADistiller loop : {bare['ofa']:8.1f} images/s")
    print(f"ofasearch fit() loop   : {loop:8.1f} images/s")
    print(f"ratio loop / bare      : {loop / bare['ofa']:8.3f}   (target >= 0.9)")
    print(f"student alone (none)   : {bare['none']:8.1f} images/s")
    print(f"vanilla KD (kd)        : {bare['kd']:8.1f} images/s")
    print(
        f"OFA step cost / student alone: {bare['none'] / bare['ofa']:.2f}x; "
        f"OFA / KD (branch cost): {bare['kd'] / bare['ofa']:.2f}x"
    )
    if not args.no_options:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        options_table(splits, batch, steps, device, compile_too=not args.smoke_test)
        placement_line(splits, batch, steps, device)


if __name__ == "__main__":
    main()
