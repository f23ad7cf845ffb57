"""The production-training example runs on a real train config and its student reloads in timm."""

import subprocess
import sys
from pathlib import Path

import pytest
import timm
from safetensors.torch import load_file

from ofasearch import load_student

pytestmark = pytest.mark.slow  # starts Ray or trains a model: not in the fast tier

ROOT = Path(__file__).resolve().parents[2]


def test_train_best_example_smoke(tmp_path):
    out = tmp_path / "student"
    script, config = ROOT / "scripts" / "train_best.py", ROOT / "search_spaces" / "train_cnn_to_vit.yaml"
    result = subprocess.run(
        [sys.executable, str(script), str(config), "--smoke-test", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "student test accuracy" in result.stdout
    # the same student, built by hand with timm alone, takes the weights as they are
    student = timm.create_model(
        "vit_tiny_patch16_224",
        patch_size=4,
        embed_dim=64,
        depth=4,
        num_heads=2,
        img_size=28,
        num_classes=10,
        in_chans=1,
    )
    student.load_state_dict(load_file(out / "student.safetensors"))
    loaded, transform = load_student(out)  # and the loader finds model and preprocessing in config.json
    assert transform.image_size == 28
    assert type(loaded) is type(student)


def test_train_best_rejects_a_search_spec(tmp_path):
    script, spec = ROOT / "scripts" / "train_best.py", ROOT / "search_spaces" / "cnn_to_vit.yaml"
    result = subprocess.run([sys.executable, str(script), str(spec)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "a train config" in result.stderr
    assert "Traceback" not in result.stderr
