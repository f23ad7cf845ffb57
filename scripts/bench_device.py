"""The device table: ofasearch's training loop against bare steps of the same models on one GPU.

Each row runs ``fit()`` (the loop every trial runs: views made on the device from the resident
train set, the OFA distiller, the optimiser) and, in the same process, the bare step a user would
time: pre-made input tensors on the device, a timm forward and backward (after a frozen
teacher's forward, for the live-teacher row). The figure is the loop's img/s over the bare
img/s. The packed rows pack 1, 2, 4 and 8 trials on the device (one process each, all started
together) and give their summed img/s and, on a GPU, the mean utilisation nvidia-smi saw. The
last rows (CUDA only) train one such trial with ``optim.compile`` off, on and graphs.

The 224-px rows use synthetic images of CIFAR's shape (32-px RGB, digits coloured: no CIFAR or
ImageNet reaches the device machine) upsampled by the recipe's RandomResizedCrop, with the
paper's recipes' augmentation (``paper-cnn``: crop + flip; ``paper-vit``: RandAugment, random
erasing, Mixup/CutMix); the packed rows use digits at 32 px with the pad crop. Untrained
weights: speed does not depend on them.

    python scripts/bench_device.py               # on a GPU: about 3 minutes on an H100
    python scripts/bench_device.py --smoke-test  # tiny models and sizes, on the CPU too (CI)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from bench_step import _sync  # scripts/ is on the path of a script run from it

from ofasearch.config import AugmentSpec, DataSpec, OptimSpec
from ofasearch.config.registry import recipe_section
from ofasearch.data import ImageSet, Splits, load_splits
from ofasearch.distill import OFADistiller
from ofasearch.models import build_model
from ofasearch.training.logit_cache import open_or_build
from ofasearch.training.loop import fit


@dataclass(frozen=True)
class Row:
    """One comparison: ``recipe``'s views, ``student`` distilled from ``teacher`` (from a logit
    cache, or live)."""

    label: str
    recipe: str
    student: str
    teacher: str
    cached: bool


SWIN_T, DEIT_T = "swin_tiny_patch4_window7_224", "deit_tiny_patch16_224"
ROWS = [
    Row("paper-cnn, resnet18 <- swin_tiny, logit cache", "paper-cnn", "resnet18", SWIN_T, True),
    Row("paper-cnn, resnet18 <- swin_tiny, live teacher", "paper-cnn", "resnet18", SWIN_T, False),
    Row("paper-vit, deit_tiny <- convnext_tiny, logit cache", "paper-vit", DEIT_T, "convnext_tiny", True),
]
SMOKE_ROWS = [
    Row("paper-cnn, resnet10t <- resnet10t, logit cache", "paper-cnn", "resnet10t", "resnet10t", True),
    Row("paper-vit, resnet10t <- resnet10t, live teacher", "paper-vit", "resnet10t", "resnet10t", False),
]
PACKED_STUDENT = ("vit_tiny_patch16_224", {"patch_size": 4, "embed_dim": 96, "depth": 4, "num_heads": 3})


class GpuSampler(threading.Thread):
    """nvidia-smi's utilisation (%) and memory used (MiB) once a second until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self.stop.is_set():
            try:
                line = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.splitlines()[0]
                util, mem = (float(x) for x in line.split(","))
                self.samples.append((util, mem))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            self.stop.wait(1.0)

    def summary(self) -> str:
        if not self.samples:
            return "GPU utilisation: no nvidia-smi samples"
        util = [u for u, _ in self.samples]
        return (
            f"GPU utilisation mean {sum(util) / len(util):.0f} % (max {max(util):.0f} %), "
            f"memory used max {max(m for _, m in self.samples):.0f} MiB, {len(util)} samples"
        )

    def mean_busy(self) -> str:
        util = [u for u, _ in self.samples]
        return f"{sum(util) / len(util):.0f} %" if util else "n/a"


def _recipe_augment(name: str) -> AugmentSpec:
    return AugmentSpec(**recipe_section(name, "augment"))


def cifar_shaped(image_size: int, n: int) -> Splits:
    """``n`` 32-px RGB training images (digits upsampled and coloured), trained at ``image_size``."""
    splits = load_splits(DataSpec(dataset="digits", image_size=image_size, train_subset=n + 64, val_size=32))
    g = torch.Generator().manual_seed(0)
    for part in (splits.train, splits.val, splits.test):
        stored = torch.nn.functional.interpolate(part.images.float(), size=(32, 32), mode="bilinear")
        colour = torch.randint(0, 60, (len(stored), 3, 1, 1), generator=g)
        part.images = (stored.repeat(1, 3, 1, 1) + colour).clamp(0, 255).to(torch.uint8)
    splits.train = ImageSet(splits.train.images[:n], splits.train.labels[:n])
    splits.in_chans, splits.mean, splits.std = 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    return splits


def _optim(batch: int, epochs: int, device: torch.device, compile: str = "off") -> OptimSpec:
    amp = "bf16" if device.type == "cuda" else "off"
    return OptimSpec(
        batch_size=batch, epochs=epochs, warmup_epochs=0, compile=compile, data_on_device="on", amp=amp, ema_decay=0
    )


def loop_rate(
    splits: Splits,
    student: OFADistiller,
    augment: AugmentSpec,
    batch: int,
    epochs: int,
    device: torch.device,
    cache,
    compile: str = "off",
) -> float:
    """fit()'s img/s: training images over the median epoch's wall time after the first (which
    warms up the device, and compiles); an epoch includes its validation of 32 images."""
    result = fit(
        student, splits, _optim(batch, epochs, device, compile), seed=0, device=device, evaluate_test=False,
        logit_cache=cache, augment=augment,
    )  # fmt: skip
    seconds = statistics.median(h.seconds for h in result.history[1:])
    return len(splits.train) / seconds


def bare_rate(student, teacher, batch: int, size: int, steps: int, device: torch.device) -> float:
    """img/s of a bare step on pre-made device tensors: a frozen teacher's forward (when given),
    the student's forward and backward with cross-entropy, an AdamW step."""
    student = student.to(device).train()
    teacher = teacher.to(device).eval() if teacher is not None else None
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps (allocator, cuDNN's choice of kernels)
            _sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            if teacher is not None:
                with torch.no_grad():
                    teacher(x)
            loss = torch.nn.functional.cross_entropy(student(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def _models(row: Row, splits: Splits):
    kw = dict(num_classes=splits.num_classes, in_chans=3, image_size=splits.image_size)
    torch.manual_seed(0)
    return build_model(row.student, **kw), build_model(row.teacher, **kw)


def table_row(row: Row, size: int, batch: int, batches: int, epochs: int, device: torch.device) -> str:
    """One 224-px comparison: the loop (with ``row``'s teacher cached or live) over the bare step."""
    splits = cifar_shaped(size, batch * batches)
    augment = _recipe_augment(row.recipe)
    student, teacher = _models(row, splits)
    distiller = OFADistiller(student, teacher, splits.num_classes, eps=1.2, method="ofa", input_size=splits.input_size)
    with tempfile.TemporaryDirectory() as folder:
        cache = None
        if row.cached:
            from ofasearch.data import Pipeline

            pipeline = Pipeline(augment, splits)
            cache = open_or_build(
                teacher, splits, Path(folder) / "cache", seed=0, views=epochs, pipeline=pipeline, device=device
            )
        loop = loop_rate(splits, distiller, augment, batch, epochs, device, cache)
    student, teacher = _models(row, splits)
    bare = bare_rate(student, None if row.cached else teacher, batch, size, batches * 2, device)
    baseline = "bare student step" if row.cached else "bare teacher forward + student step"
    return f"{row.label:<52} {loop:9.1f} img/s  vs {baseline} {bare:9.1f} img/s  x{loop / bare:.2f}"


def _small_trial(batch: int, batches: int) -> tuple[Splits, OFADistiller]:
    """The packed rows' trial: digits at 32 px, a ViT 4x96 student, a live resnet10t teacher."""
    splits = load_splits(DataSpec(dataset="digits", image_size=32, train_subset=batch * batches + 64, val_size=32))
    kw = dict(num_classes=splits.num_classes, in_chans=splits.in_chans, image_size=32)
    torch.manual_seed(0)
    student = build_model(PACKED_STUDENT[0], PACKED_STUDENT[1], **kw)
    distiller = OFADistiller(
        student, build_model("resnet10t", **kw), splits.num_classes, eps=1.2, method="ofa",
        input_size=splits.input_size,
    )  # fmt: skip
    splits.train = ImageSet(splits.train.images[: batch * batches], splits.train.labels[: batch * batches])
    return splits, distiller


def compile_rows(batch: int, batches: int, epochs: int, device: torch.device) -> list[str]:
    """The packed rows' trial alone with ``optim.compile`` off, on and graphs (CUDA graphs): what
    auto would need to choose graphs. A mode that fails prints its error and the rest go on."""
    lines, eager = [], None
    for mode in ("off", "on", "graphs"):
        splits, distiller = _small_trial(batch, batches)
        try:
            rate = loop_rate(splits, distiller, AugmentSpec(), batch, epochs, device, None, compile=mode)
        except Exception as exc:  # one failing mode must not lose the table
            lines.append(f"optim.compile {mode:<6} at 32 px, batch {batch}: failed: {type(exc).__name__}: {exc}")
            continue
        eager = rate if mode == "off" else eager
        lines.append(
            f"optim.compile {mode:<6} at 32 px, batch {batch}: {rate:9.1f} img/s"
            f"{f'  x{rate / eager:.2f} of off' if eager else ''}"
        )
    return lines


def _packed_trial(batch: int, batches: int, epochs: int, device: str, start, out) -> None:
    """One packed trial: fit() at 32 px with the pad crop, the teacher live (as a search trial)."""
    torch.set_num_threads(1)
    splits, distiller = _small_trial(batch, batches)
    start.wait()
    rate = loop_rate(splits, distiller, AugmentSpec(), batch, epochs, torch.device(device), None)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0
    out.put((rate, peak))


def packed_rows(counts: list[int], batch: int, batches: int, epochs: int, device: torch.device) -> list[str]:
    """Summed img/s of ``k`` trials sharing the device, for each k of ``counts``."""
    ctx = mp.get_context("spawn")
    lines, single = [], None
    for k in counts:
        start, out = ctx.Event(), ctx.Queue()
        trial = (batch, batches, epochs, device.type, start, out)
        procs = [ctx.Process(target=_packed_trial, args=trial) for _ in range(k)]
        for p in procs:
            p.start()
        time.sleep(2.0)  # let each process load torch and its data before the shared start
        sampler = GpuSampler() if device.type == "cuda" else None
        if sampler is not None:
            sampler.start()
        start.set()
        results = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
        if sampler is not None:
            sampler.stop.set()
            sampler.join()
        total = sum(r for r, _ in results)
        single = total if k == 1 else single
        busy = sampler.mean_busy() if sampler is not None else "n/a (no GPU)"
        peak = max(m for _, m in results)
        lines.append(
            f"{k} packed trial(s) at 32 px, batch {batch}: summed {total:9.1f} img/s"
            f"{f'  x{total / single:.2f} of one' if single else ''}, "
            f"GPU busy {busy}, peak {peak:.0f} MiB per trial"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-test", action="store_true", help="tiny models and sizes, on the CPU too (CI)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=8, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per loop run (the first warms up)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows, size, counts = ROWS, 224, [1, 2, 4, 8]
    if args.smoke_test:
        rows, size, counts = SMOKE_ROWS, 32, [2]
        args.batch, args.batches, args.epochs = 8, 2, 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
    print(f"device table on {name}: batch {args.batch}, {args.batches} batches per epoch, {args.epochs} epochs")
    for row in rows:
        print(table_row(row, size, args.batch, args.batches, args.epochs, device), flush=True)
    for line in packed_rows(counts, args.batch, args.batches, args.epochs, device):
        print(line, flush=True)
    if device.type != "cuda":  # a compile takes about a minute on a CPU, and CUDA graphs need CUDA
        print("optim.compile off / on / graphs: measured on CUDA only")
        return 0
    for line in compile_rows(args.batch, args.batches, max(args.epochs, 4), device):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
