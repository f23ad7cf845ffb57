"""Example: the best config of a search inside *your own* PyTorch training script.

ofasearch's own trainer is ``ofasearch train best.yaml``. This script shows the other way: keep
your data pipeline and loop, and take from ofasearch only the config (``load_config``), the
distiller (``OFADistiller``: student + frozen teacher + exit branches + the OFA loss) and, if you
want the loss alone, ``ofa_loss``. The student it saves is a plain timm model state dict plus its
``config.json`` (model, kwargs and preprocessing, ``save_student``); ``load_student`` gives it
back with the transform that feeds it, as for an ``ofasearch train`` run.

    ofasearch export ofasearch_results/cnn_to_vit -o best.yaml
    python scripts/train_best.py best.yaml --epochs 30 --output runs/mine
    python scripts/train_best.py search_spaces/train_cnn_to_vit.yaml --smoke-test   # tiny, for CI
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, TensorDataset

from ofasearch import OFADistiller, SpecError, load_config, load_student
from ofasearch.data import load_splits, resize_images
from ofasearch.models.student_folder import save_student
from ofasearch.training.teacher import build_teacher, prepare_teacher


def your_loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool) -> DataLoader:
    """Stands for your existing data pipeline: any loader yielding float images in [0, 1]."""
    return DataLoader(TensorDataset(images.float() / 255.0, labels), batch_size=batch_size, shuffle=shuffle)


@torch.no_grad()
def accuracy(model: torch.nn.Module, transform: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader) -> float:
    """Top-1 of a saved student: each image goes through its transform first (normalisation!)."""
    model.eval()
    hits = total = 0
    for x, y in loader:
        hits += (model(transform(x)).argmax(1) == y).sum().item()
        total += len(y)
    return hits / max(total, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a train config: best.yaml, an `ofasearch export` file...")
    parser.add_argument("--epochs", type=int, help="default: the config's optim.epochs")
    parser.add_argument("--output", default="student", help="folder for student.safetensors + config.json")
    parser.add_argument("--smoke-test", action="store_true", help="256 images, 1 epoch")
    args = parser.parse_args()
    try:
        config = load_config(args.config)
    except SpecError as exc:
        print("\n".join(f"error: {p}" for p in exc.problems), file=sys.stderr)
        return 2
    if args.smoke_test:
        config = config.model_copy(update={"data": config.data.model_copy(update={"train_subset": 256})})
    epochs = 1 if args.smoke_test else args.epochs or int(config.optim.epochs)
    torch.manual_seed(config.seed)

    # 1. Data: yours. Here the config's dataset, as tensors.
    #    (datasets are stored at most at their native size: resize to the models' input size)
    splits = load_splits(config.data)
    size = splits.image_size
    train = your_loader(
        resize_images(splits.train.images, size), splits.train.labels, int(config.optim.batch_size), shuffle=True
    )
    test = your_loader(resize_images(splits.test.images, size), splits.test.labels, 256, shuffle=False)

    # 2. Models: the teacher from its checkpoint (an `auto` teacher is trained once and cached),
    #    then the distiller: the student exactly as searched (seeded with config.seed), the frozen
    #    teacher and the exit branches, in one module whose forward returns the OFA loss.
    pair = config.pair
    teacher = build_teacher(pair.teacher, prepare_teacher(pair.teacher, config.data, splits), splits)
    distiller = OFADistiller.from_config(config, teacher, **splits.model_args)
    student = distiller.student

    # 3. Optimise what trains (student and branches; the teacher is frozen).
    params = [p for p in distiller.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(config.optim.lr), weight_decay=float(config.optim.weight_decay))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(train))

    # 4. Your loop.
    for epoch in range(1, epochs + 1):
        distiller.train()
        start, total = time.perf_counter(), 0.0
        for x, y in train:
            loss, _parts = distiller(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            scheduler.step()
            total += loss.item()
        print(f"epoch {epoch}/{epochs}: loss {total / len(train):.4f} ({time.perf_counter() - start:.0f} s)")

    # 5. Only the student ships: a plain timm state dict, and config.json saying how to build and
    #    feed it (timm name, kwargs, classes, channels, size, mean/std). Loaded back, it is a fresh
    #    timm model plus the transform that normalises its input as the distiller did in training.
    save_student(args.output, student, pair.student.model, pair.student.kwargs, **splits.model_args)
    model, transform = load_student(args.output)
    print(f"student test accuracy {accuracy(model, transform, test):.4f}; saved in {args.output} (load_student)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
