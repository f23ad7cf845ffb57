"""The trained student outside PyTorch's eager mode: TorchScript and ONNX files beside
``student.safetensors``, each checked numerically against the PyTorch model before it is kept.

The check feeds inputs the exporter never saw (another batch size than the trace's example, real
preprocessing of random uint8 images) and records the largest absolute logit difference in
``config.json`` (``ofasearch.exports``). ONNX needs the optional ``export`` extra (``onnx``,
``onnxscript``, ``onnxruntime``); without it, asking for ONNX is a one-line SpecError.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ofasearch.errors import SpecError
from ofasearch.models.student_folder import CARD_FILE, StudentTransform, load_student, read_card
from ofasearch.utils.files import atomic_write, file_record

__all__ = ["EXPORT_FILES", "FORMATS", "export_student"]

EXPORT_FILES = {"torchscript": "student.torchscript.pt", "onnx": "student.onnx"}
FORMATS = tuple(EXPORT_FILES)
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")
TOLERANCE = 1e-4  # largest absolute logit difference accepted (float32 kernels differ in order)


def _inputs(transform: StudentTransform, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = (batch, transform.in_chans, transform.image_size, transform.image_size)
    return transform(torch.randint(0, 256, size, generator=g, dtype=torch.uint8))


def _torchscript(model: nn.Module, example: torch.Tensor, check: torch.Tensor, path: Path) -> float:
    with warnings.catch_warnings():  # torch >= 2.10 marks torch.jit deprecated; it still works
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return float((loaded(check) - model(check)).abs().max())


def _onnx(model: nn.Module, example: torch.Tensor, check: torch.Tensor, path: Path) -> float:
    missing = [m for m in ONNX_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise SpecError(
            [f"--export onnx: needs {', '.join(missing)}; install them with `pip install 'ofasearch[export]'`"]
        )
    import onnxruntime

    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        verbose=False,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": check.numpy()})
    with torch.no_grad():
        return float((torch.from_numpy(logits) - model(check)).abs().max())


_EXPORTERS = {"torchscript": _torchscript, "onnx": _onnx}


def export_student(folder: str | Path, formats: Sequence[str] = FORMATS) -> dict[str, dict[str, Any]]:
    """Export the student of ``folder`` (an ``ofasearch train`` output) to each of ``formats``,
    check each file against the PyTorch model on fresh inputs, and record file, SHA-256 and the
    largest logit difference in ``config.json``. A difference above 1e-4 deletes the file and
    raises (an export that does not compute the model must not ship)."""
    folder = Path(folder)
    unknown = [f for f in formats if f not in EXPORT_FILES]
    if unknown:
        raise SpecError([f"--export: {', '.join(unknown)} not allowed (allowed: {', '.join(FORMATS)})"])
    model, transform = load_student(folder)
    example, check = _inputs(transform, 2, seed=0), _inputs(transform, 5, seed=1)
    card = read_card(folder)
    done: dict[str, dict[str, Any]] = {}
    for fmt in formats:
        path = folder / EXPORT_FILES[fmt]
        diff = _EXPORTERS[fmt](model, example, check, path)
        if not diff <= TOLERANCE:
            path.unlink(missing_ok=True)
            raise RuntimeError(f"{fmt} export of {folder} differs from the PyTorch model by {diff:.3g} (> {TOLERANCE})")
        done[fmt] = {
            "file": path.name,
            **file_record(path),
            "max_abs_diff": diff,
            "checked_on": f"{len(check)} preprocessed random images, batch size unlike the export's example",
        }
    card["ofasearch"].setdefault("exports", {}).update(done)
    atomic_write(folder / CARD_FILE, json.dumps(card, indent=2))
    return done
