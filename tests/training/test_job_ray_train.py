"""``ofasearch train --workers 2``: the same loop under DDP on Ray Train with gloo."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ofasearch.cli import main
from ofasearch.config import parse_config
from ofasearch.data import load_splits
from ofasearch.distill import OFADistiller
from tests.specs import CONFIG, VIT

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
    assert (out / "config.yaml").is_file() and list((out / "tensorboard").glob("events.*"))
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
