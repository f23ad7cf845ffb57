"""Training views of the paper's recipes per second: timm's PIL pipeline against the same views
as tensor ops (``Pipeline.tensor_views``), on the host and, where there is one, on the GPU.

The views go to 224 px from 32-px RGB images (CIFAR's size: digits upsampled and coloured, as no
CIFAR is on this machine): ``paper-cnn`` (RandomResizedCrop + flip) and ``paper-vit``
(RandomResizedCrop, flip, RandAugment m9, random erasing, Mixup/CutMix with label smoothing).
Each path builds the same batches (same seeds, samples and views); the figures are images per
second and the ratio to the PIL path of the same recipe measured in the same run.

    .venv/bin/python scripts/bench_views.py [--batch 128] [--batches 4] [--smoke-test]
"""

from __future__ import annotations

import argparse
import time

import torch

from ofasearch.config import AugmentSpec, DataSpec
from ofasearch.config.registry import recipe_section
from ofasearch.data import ImageSet, Pipeline, load_splits


def _recipe(name: str) -> AugmentSpec:
    return AugmentSpec(**recipe_section(name, "augment"))


def _cifar_like(image_size: int, n: int):
    splits = load_splits(DataSpec(dataset="digits", image_size=image_size, train_subset=n))
    stored = torch.nn.functional.interpolate(splits.train.images.float(), size=(32, 32), mode="bilinear")
    colour = torch.randint(0, 60, (len(stored), 3, 1, 1), generator=torch.Generator().manual_seed(0))
    splits.train = ImageSet((stored.repeat(1, 3, 1, 1) + colour).clamp(0, 255).to(torch.uint8), splits.train.labels)
    splits.in_chans, splits.mean, splits.std = 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    return splits


def _rate(pipeline: Pipeline, train: ImageSet, batch: int, batches: int, device: torch.device) -> float:
    """Images per second of ``batches`` training batches, the views made where ``train`` is."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))
    pipeline.train_batch(train, order[:batch], seed=0, view=0)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for b in range(batches):
        pipeline.train_batch(train, order[(b * batch) % len(train) :][:batch], seed=0, view=b + 1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * batches / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--smoke-test", action="store_true", help="tiny settings, for CI")
    args = parser.parse_args()
    if args.smoke_test:
        args.batch, args.batches, args.image_size = 8, 1, 64
    splits = _cifar_like(args.image_size, max(args.batch * 2, 64))
    cpu = torch.device("cpu")
    gpu = torch.device("cuda") if torch.cuda.is_available() else None
    for recipe in ("paper-cnn", "paper-vit"):
        pil = Pipeline(_recipe(recipe), splits)
        pil.use_pil_views()  # timm's per-sample PIL pipeline
        tensor = Pipeline(_recipe(recipe), splits)
        rows = [("timm PIL pipeline, host", _rate(pil, splits.train, args.batch, args.batches, cpu))]
        rows.append(("tensor views, host", _rate(tensor, splits.train, args.batch, args.batches, cpu)))
        if gpu is not None:
            resident = ImageSet(splits.train.images.to(gpu), splits.train.labels.to(gpu))
            name = torch.cuda.get_device_name(gpu)
            rows.append((f"tensor views, {name}", _rate(tensor, resident, args.batch, args.batches, gpu)))
        print(f"{recipe} views, {args.image_size} px from 32 px, batch {args.batch} x {args.batches} batches")
        base = rows[0][1]
        for label, rate in rows:
            print(f"  {label:<40} {rate:9.1f} img/s  x{rate / base:.2f}")
    if gpu is None:
        print("  (no GPU here: the device rows need one)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
