"""TorchScript and ONNX files of a student, each checked against the PyTorch model."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from ofasearch import SpecError
from ofasearch.models import build_model
from ofasearch.models.portable import ONNX_MODULES, export_student
from ofasearch.models.student_folder import save_student
from tests.helpers.specs import VIT

ARGS = {"num_classes": 10, "in_chans": 1, "image_size": 16}


@pytest.fixture
def student_folder(tmp_path):
    torch.manual_seed(0)
    model = build_model(VIT["model"], VIT["kwargs"], **ARGS)
    save_student(tmp_path, model, VIT["model"], VIT["kwargs"], **ARGS)
    return tmp_path


def test_torchscript_export_computes_the_student(student_folder):
    entry = export_student(student_folder, ["torchscript"])["torchscript"]
    assert entry["max_abs_diff"] <= 1e-4
    loaded = torch.jit.load(str(student_folder / "student.torchscript.pt"))
    x = torch.rand(3, 1, 16, 16)
    from ofasearch import load_student

    model, _ = load_student(student_folder)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
    card = json.loads((student_folder / "config.json").read_text())
    assert card["ofasearch"]["exports"]["torchscript"]["sha256"] == entry["sha256"]


def test_unknown_format_is_one_line(student_folder):
    with pytest.raises(SpecError, match="--export: tflite not allowed"):
        export_student(student_folder, ["tflite"])


@pytest.mark.slow
@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ONNX_MODULES), reason="the 'export' extra is not installed"
)
def test_onnx_export_runs_in_onnxruntime_like_the_student(student_folder):
    import onnxruntime

    entry = export_student(student_folder, ["onnx"])["onnx"]
    assert entry["max_abs_diff"] <= 1e-4
    session = onnxruntime.InferenceSession(str(student_folder / "student.onnx"), providers=["CPUExecutionProvider"])
    from ofasearch import load_student

    model, transform = load_student(student_folder)
    x = transform(torch.randint(0, 256, (7, 1, 16, 16), dtype=torch.uint8))  # another batch size than exported
    (logits,) = session.run(["logits"], {"input": x.numpy()})
    with torch.no_grad():
        assert np.abs(logits - model(x).numpy()).max() < 1e-4
