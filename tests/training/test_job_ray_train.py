"""``ofasearch train --workers 2``: the same loop under DDP on Ray Train with gloo."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ofasearch.cli import main
from ofasearch.config import parse_config
from ofasearch.data import load_splits
from ofasearch.distill import OFADistiller
from tests.helpers.specs import CONFIG, VIT

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # starts Ray or trains a model: not in the fast tier


def test_two_gloo_workers_on_ray_train(tmp_path, ray_local):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "out"
    assert main(["train", str(path), "--output", str(out), "--workers", "2", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == CONFIG["optim"]["epochs"]
    assert metrics["val_acc"] > 0.3, f"10 classes: chance is 0.1, got {metrics['val_acc']}"
    assert (out / "student.safetensors").stat().st_size > 10_000
    assert (out / "config.yaml").is_file()
    assert list((out / "tensorboard").glob("events.*"))
    assert not (tmp_path / ".out-ray").exists(), "Ray Train's run folder is cleaned up"


def test_global_batch_takes_the_same_steps_on_one_and_two_workers(tmp_path, ray_local):
    """``optim.batch_size`` is global: 2 gloo workers with 32 images each make the same SGD updates
    as one process with 64 (SGD: an update is lr x gradient, so equal weights = equal gradients).
    Two steps of 64 out of 128 images: with each worker taking the whole 64 (the old behaviour),
    the 2-worker run would make one step of 128 and end elsewhere. A LayerNorm ViT, so no
    per-worker BatchNorm statistics blur the comparison."""
    config = {
        "name": "global-batch",
        "data": {"dataset": "digits", "image_size": 16, "val_size": 50, "train_subset": 128},
        "pairs": [{"teacher": {"model": "resnet10t"}, "student": VIT}],
        "distill": {"method": "none"},
        "optim": {"name": "sgd", "lr": 0.5, "epochs": 1, "batch_size": 64, "warmup_epochs": 0, "clip_grad": 0},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    weights = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert main(["train", str(path), "--output", str(out), "--workers", str(workers), "--no-progress"]) == 0
        weights[workers] = load_file(str(out / "student.safetensors"))
    parsed = parse_config(config)
    start = OFADistiller.from_config(parsed, None, **load_splits(parsed.data).model_args).student.state_dict()
    moved = 0.0
    for name, w1 in weights[1].items():
        step1, step2 = w1 - start[name], weights[2][name] - start[name]
        assert torch.allclose(step1, step2, rtol=1e-4, atol=1e-6), f"{name}: updates differ between 1 and 2 workers"
        moved = max(moved, float(step1.abs().max()))
    assert moved > 1e-3, "the steps must move the weights, or equal weights prove nothing"


def test_batch_that_does_not_split_over_the_workers_is_one_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "optim": {**CONFIG["optim"], "batch_size": 33}}))
    assert main(["train", str(path), "--output", str(tmp_path / "o"), "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: optim.batch_size: 33 is not divisible by the 2 workers (the batch is global: each worker "
        "takes batch_size / workers); use a multiple of 2 (--workers 2)"
    ]


def test_a_killed_ray_train_run_resumes_from_its_ray_checkpoint(tmp_path, ray_local, capsys):
    """SIGKILL the driver of `train --workers 2` once Ray Train holds an epoch checkpoint, then
    `--resume --workers 2`: Ray Train restores the run from its storage folder and the workers
    continue after the checkpointed epoch instead of starting at epoch 0."""
    import ray

    ray.shutdown()  # the killed driver starts its own local Ray; the resume below starts one again
    data = {**CONFIG, "optim": {**CONFIG["optim"], "epochs": 4}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    storage = tmp_path / ".out-ray"
    cmd = [sys.executable, "-m", "ofasearch", "train", str(path), "-o", str(out), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while not list(storage.glob("*/checkpoint_*/last.pth")):
        assert proc.poll() is None, "the run ended before a checkpoint"
        assert time.monotonic() < deadline, "the run ended before a checkpoint"
        time.sleep(0.5)
    time.sleep(1.0)  # let Ray record the checkpoint in its run snapshot
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # a later epoch's folder can be on disk before Ray records it (CI once killed in that gap: folder
    # for epoch 2, Ray's record at epoch 1), so the resume may take any checkpointed epoch >= the first
    saved = sorted(torch.load(p, weights_only=True)["epoch"] for p in storage.glob("*/checkpoint_*/last.pth"))
    assert not (out / "metrics.json").exists()

    cmd = ["train", str(path), "-o", str(out), "--workers", "2", "--no-progress", "--resume"]
    assert main(cmd) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    resumed = metrics["resumed_from_epoch"]
    print(f"\nRay Train: killed with checkpoints of epochs {saved} of 4; resumed after epoch {resumed}")
    assert metrics["epochs"] == 4
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert resumed in saved, f"continued after a checkpointed epoch {saved}, not from 0"
    assert resumed >= 1, f"continued after a checkpointed epoch {saved}, not from 0"
    assert metrics["val_acc"] > 0.15, f"10 classes: chance is 0.1, got {metrics['val_acc']}"  # 4 epochs: ~0.25
    assert not storage.exists(), "Ray Train's run folder is cleaned up after success"
