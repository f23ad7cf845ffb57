"""Example: the best config of a search inside *your own* PyTorch training script.

ofasearch's own trainer is ``ofasearch train best.yaml``. This script shows the other way: keep
your data pipeline and loop, and take from ofasearch only the config (``load_config``), the
distiller (``OFADistiller``: student + frozen teacher + exit branches + the OFA loss) and, if you
want the loss alone, ``ofa_loss``. The student it saves is a plain timm model state dict.

    ofasearch export ofasearch_results/cnn_to_vit -o best.yaml
    python scripts/train_best.py best.yaml --epochs 30 --output student.safetensors
    python scripts/train_best.py search_spaces/train_cnn_to_vit.yaml --smoke-test   # tiny, for CI
"""

from __future__ import annotations

import argparse
import sys
import time

import timm
import torch
from safetensors.torch import load_file, save_model
from torch.utils.data import DataLoader, TensorDataset

from ofasearch import OFADistiller, SpecError, load_config
from ofasearch.data import load_splits, resize_images
from ofasearch.training.teacher import build_teacher, prepare_teacher


def your_loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool) -> DataLoader:
    """Stands for your existing data pipeline: any loader yielding float images in [0, 1]."""
    return DataLoader(TensorDataset(images.float() / 255.0, labels), batch_size=batch_size, shuffle=shuffle)


@torch.no_grad()
def accuracy(model: torch.nn.Module, loader: DataLoader) -> float:
    model.eval()
    hits = total = 0
    for x, y in loader:
        hits += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    return hits / max(total, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a train config: best.yaml, an `ofasearch export` file...")
    parser.add_argument("--epochs", type=int, help="default: the config's optim.epochs")
    parser.add_argument("--output", default="student.safetensors")
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

    # 5. Only the student ships: its state dict loads into a fresh timm model as it is.
    save_model(student, args.output)
    kwargs = {**pair.student.kwargs, "num_classes": splits.num_classes, "in_chans": splits.in_chans}
    try:
        fresh = timm.create_model(pair.student.model, img_size=splits.image_size, **kwargs)
    except TypeError:  # CNNs have no img_size argument
        fresh = timm.create_model(pair.student.model, **kwargs)
    fresh.load_state_dict(load_file(args.output))
    print(f"student test accuracy {accuracy(fresh, test):.4f}; weights: {args.output} (timm + load_state_dict)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
