"""The prepared check of ofasearch's CUDA paths (about 6 minutes on one GPU).

1. ``scripts/bench_device.py``: the device table (the training loop at 224 px with the paper's
   recipes against bare steps of the same models; 1, 2, 4 and 8 packed trials: summed img/s and
   GPU utilisation; one small trial with ``optim.compile`` off, on and graphs);
2. a short search whose trials share one GPU as ``gpus_per_worker: auto`` measured (probe trials
   before the first, then 2 at once), sampling GPU utilisation and memory with nvidia-smi while it
   runs; prints the packing chosen and img/s per trial;
3. ``ofasearch train`` of the search's best config on the GPU.

Exits 1 on any error of those (a failed trial included), 2 with one line on a machine where
CUDA sees no GPU (nothing to check there). ``--smoke-test`` runs only the table, with tiny
models and sizes, on whatever device there is (the CPU in CI).

    python scripts/gpu_check.py [--keep DIR] [--smoke-test]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from bench_device import GpuSampler  # scripts/ is on the path of a script run from it

ROOT = Path(__file__).resolve().parent.parent
STUDENT = {"model": "vit_tiny_patch16_224", "kwargs": {"patch_size": 4, "embed_dim": 96, "depth": 4, "num_heads": 3}}
SPEC = {
    "name": "gpu-check",
    "data": {"dataset": "digits", "image_size": 32},  # bundled with scikit-learn: no download
    "pairs": [{"teacher": {"model": "resnet10t", "recipe": {"epochs": 3, "batch_size": 128}}, "student": STUDENT}],
    "distill": {"method": "ofa", "stages": [1, 2, 3, 4], "eps": {"low": 1.0, "high": 1.5}},
    # amp bf16: at 32 px auto keeps float32 (measured faster there), and the autocast path must run
    "optim": {"lr": {"low": 1e-3, "high": 3e-3, "log": True}, "epochs": 4, "batch_size": 128, "amp": "bf16"},
    "search": {"num_samples": 2, "max_concurrent": 2, "baselines": False},
    "resources": {"gpus_per_worker": "auto", "cpus_per_worker": 2},
}


def step(title: str, cmd: list[str]) -> float:
    """Run one part with the GPU sampled; its output streams through; a failure ends the check."""
    print(f"\n== {title}: {' '.join(cmd)}", flush=True)
    sampler = GpuSampler()
    sampler.start()
    start = time.perf_counter()
    code = subprocess.run(cmd, cwd=ROOT).returncode
    seconds = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    print(f"-- {title}: exit {code}, {seconds:.0f} s; {sampler.summary()}", flush=True)
    if code != 0:
        sys.exit(f"gpu_check: {title} failed (exit {code})")
    return seconds


def per_trial_speed(folder: Path, train_images: int) -> None:
    """img/s of each trial: training images x epochs over the seconds its epochs took."""
    import pyarrow.parquet as pq

    trials = pq.read_table(folder / "trials.parquet").to_pylist()
    bad = [t for t in trials if t["status"] in ("error", "diverged")]
    for t in trials:
        rate = train_images * t["epochs"] / t["seconds"] if t["seconds"] else float("nan")
        status = f"{t['status']}, {t['epochs']} epochs"
        print(f"trial {t['trial_id']}: {status}, {rate:.0f} img/s (with eval), val_acc {t['val_acc']:.3f}")
    if bad:
        sys.exit(f"gpu_check: {len(bad)} trial(s) ended {', '.join(t['status'] for t in bad)}: {bad[0].get('error')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", help="folder for the results (default: a temporary one)")
    parser.add_argument("--smoke-test", action="store_true", help="only the table, tiny, on any device (CI)")
    args = parser.parse_args()
    import torch

    table = [sys.executable, "scripts/bench_device.py"]
    if args.smoke_test:
        step("device table, smoke test", [*table, "--smoke-test"])
        return

    if not torch.cuda.is_available():
        print("gpu_check: CUDA sees no GPU on this machine; run this on a machine with an NVIDIA GPU", file=sys.stderr)
        sys.exit(2)
    print(f"gpu_check on {torch.cuda.get_device_name()} (bf16 supported: {torch.cuda.is_bf16_supported()})")
    work = Path(args.keep or tempfile.mkdtemp(prefix="ofasearch-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = work / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "storage": str(work / "results")}))
    py = [sys.executable, "-m", "ofasearch"]
    step("device table", table)
    step("search, trials packed on one GPU (gpus_per_worker auto)", [*py, "run", str(spec)])
    folder = work / "results" / SPEC["name"]
    packing = json.loads((folder / "state.json").read_text()).get("packing")
    print(f"packing: {packing['line'] if packing else 'none recorded (no probe ran)'}")
    from ofasearch.config import load_spec
    from ofasearch.data import load_splits

    train_images = len(load_splits(load_spec(spec).data).train)
    per_trial_speed(folder, train_images)
    step("export", [*py, "export", str(folder), "-o", str(work / "best.yaml")])
    train = [*py, "train", str(work / "best.yaml"), "--gpus-per-worker", "1", "--output", str(work / "train")]
    step("ofasearch train on the GPU", [*train, "--no-progress"])
    print(f"\ngpu_check: all CUDA paths ran; results in {work}")


if __name__ == "__main__":
    main()
