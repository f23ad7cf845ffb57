"""``ofasearch train --workers 2``: the same loop under DDP on Ray Train with gloo."""

import json

import pytest
import yaml

from ofasearch.cli import main
from tests.specs import CONFIG

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
