"""Step time of each training recipe on this machine, and the teacher-logit cache it needs.

For each (recipe, student): the seconds of one training update of the one loop (``fit``: the
recipe's pipeline, student forward/backward, optimiser, EMA; the student alone, so the teacher's
cost is not mixed in), then the seconds per image of the training views alone, and the build
time of a teacher-logit cache on a small slice (teacher forward + views). Fashion-MNIST (the
data on this machine) stands in for CIFAR-100 at the same input size; prints a table and the
cache sizes CIFAR-100 x 300 epochs needs (computed).

    .venv/bin/python scripts/bench_recipes.py --image-size 224 --batch 32 --steps 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ofasearch.config import parse_config
from ofasearch.data import Pipeline, load_splits
from ofasearch.distill import OFADistiller
from ofasearch.models import build_model
from ofasearch.training.job import input_normalization
from ofasearch.training.logit_cache import open_or_build
from ofasearch.training.loop import fit

CASES = [
    ("default", "resnet18"),
    ("paper-cnn", "resnet18"),
    ("default", "deit_tiny_patch16_224"),
    ("paper-vit", "deit_tiny_patch16_224"),
]


def cache_sizes(images: int = 50_000, epochs: int = 300, classes: int = 100, k: int = 10) -> list[str]:
    """Disk a logit cache takes: full float16 logits per (image, view) against top-k (lossy)."""
    full = images * epochs * classes * 2
    topk = images * epochs * k * (2 + (1 if classes <= 256 else 2))  # fp16 value + uint8/uint16 index
    capped = images * 32 * classes * 2
    return [
        f"cache for {images} images x {epochs} views x {classes} classes:",
        f"  float16 full logits, views = epochs: {full / 1e9:.2f} GB (exact up to float16)",
        f"  float16 top-{k} + indices: {topk / 1e9:.2f} GB (lossy: the OFA loss needs every class)",
        f"  float16 full, 32 views (the old cap): {capped / 1e9:.2f} GB (epochs 33+ reuse views)",
    ]


def step_seconds(recipe: str, student: str, size: int, batch: int, steps: int) -> tuple[float, float]:
    """Mean seconds per update over ``steps`` updates, and seconds per image of the views alone."""
    config = parse_config(
        {
            "data": {
                "dataset": "fashion-mnist",
                "image_size": size,
                "train_subset": batch * steps,  # after val_size: exactly `steps` updates
                "val_size": 20,
            },
            "recipe": recipe,
            "pairs": [{"teacher": {"model": "resnet10t"}, "student": {"model": student}}],
            "distill": {"method": "none"},
            "optim": {"epochs": 1, "batch_size": batch, "warmup_epochs": 0},
        }
    )
    splits = load_splits(config.data)
    splits.val = splits.val.take(torch.arange(2))  # time training, not evaluation
    splits.test = splits.test.take(torch.arange(2))
    distiller = OFADistiller.from_config(
        config, None, mean_std=input_normalization(config, splits), **splits.model_args
    )
    result = fit(distiller, splits, config.optim, seed=0, device=torch.device("cpu"), augment=config.augment)
    pipeline = Pipeline(config.augment, splits)
    start = time.perf_counter()
    pipeline.train_batch(splits.train, torch.arange(batch), seed=0, view=1)
    views = (time.perf_counter() - start) / batch
    return result.train_seconds / steps, views


def cache_build_seconds(recipe: str, size: int, images: int) -> float:
    """Seconds per image to build a logit cache of ``images`` x 1 view with a Swin-T teacher."""
    config = parse_config(
        {
            "data": {"dataset": "fashion-mnist", "image_size": size, "train_subset": images, "val_size": 20},
            "recipe": recipe,
            "pairs": [{"teacher": {"model": "resnet10t"}, "student": {"model": "resnet18"}}],
        }
    )
    splits = load_splits(config.data)
    teacher = build_model("swin_tiny_patch4_window7_224", **splits.model_args).eval()
    with tempfile.TemporaryDirectory() as tmp:
        cache = open_or_build(
            teacher,
            splits,
            Path(tmp) / "c",
            seed=0,
            views=1,
            pipeline=Pipeline(config.augment, splits),
            mean_std=(splits.mean, splits.std),
            batch_size=32,
        )
    return cache.build_seconds / images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cache-images", type=int, default=64)
    parser.add_argument("--smoke-test", action="store_true", help="tiny sizes, for the test suite")
    args = parser.parse_args()
    size, batch, steps, cache_images = args.image_size, args.batch, args.steps, args.cache_images
    cases = CASES
    if args.smoke_test:
        size, batch, steps, cache_images, cases = 32, 8, 2, 16, [("paper-vit", "deit_tiny_patch16_224")]
    print(f"{torch.get_num_threads()} CPU threads, fashion-mnist at {size} px, batch {batch}, {steps} updates")
    print(f"{'recipe':10} {'student':24} {'s/update':>9} {'ms/image (views)':>17}")
    for recipe, student in cases:
        update, views = step_seconds(recipe, student, size, batch, steps)
        print(f"{recipe:10} {student:24} {update:9.2f} {views * 1000:17.1f}")
    for recipe in ("paper-cnn", "paper-vit") if not args.smoke_test else ("paper-vit",):
        per_image = cache_build_seconds(recipe, size, cache_images)
        print(
            f"cache build, {recipe} views, Swin-T teacher: {per_image * 1000:.1f} ms/image on this CPU "
            f"({cache_images} images); CIFAR-100 x 300 views: {per_image * 50_000 * 300 / 3600:.0f} h here"
        )
    print("\n".join(cache_sizes()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
