"""How the training loop runs fast without changing what it computes: ``torch.compile`` of the
student and exit branches (``optim.compile``), mixed precision on CUDA (``optim.amp``) and
channels-last memory for CNNs on CUDA.

``compile: auto`` and ``amp: auto`` decide from measurement, not a guess: the loop times a few
eager steps, then compiles only when the run's remaining steps at the measured speed-up repay the
compile time (:data:`COMPILE_SPEEDUP`); bf16 autocast is used only for inputs large enough that
it was measured to pay (:data:`AMP_AUTO_ABOVE_PIXELS`). The figures are ``scripts/bench_step.py``
on a 2-core CPU and on one H100 (``scripts/gpu_check.py`` runs it there).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ofasearch.distill import OFADistiller

__all__ = [
    "AMP_AUTO_ABOVE_PIXELS",
    "COMPILE_SECONDS",
    "COMPILE_SPEEDUP",
    "PROBE_STEPS",
    "amp_choice",
    "compile_choice",
    "compile_distiller",
    "cpu_threads",
    "is_cnn",
    "to_channels_last",
    "uncompile_distiller",
]

log = logging.getLogger(__name__)

# what one compile of the OFA step costs (seconds) and gains (eager time / compiled time), from
# scripts/bench_step.py (resnet10t -> ViT 4x96, OFA step, student forward and branches compiled).
# CPU, 2 cores, 1 thread, 28 px, batch 128: 54 s to compile, 0.96-1.04x (1.31x was once measured
# compiling more of the step), so auto compiles on a CPU only for very long runs. H100, batch 256:
# first compiled step 21-27 s; 0.89x at 16 px (batch 128), 1.11x at 32 px, 1.29x at 64 px (one
# run of 8-20 steps each, about +-5 %): 1.1 is the CIFAR-sized figure
COMPILE_SECONDS = {"cpu": 55.0, "cuda": 27.0}
COMPILE_SPEEDUP = {"cpu": 1.05, "cuda": 1.1}
# bf16 autocast against float32 on the OFA step, same H100 runs: 0.57x at 16 px, 0.82x at 32 px,
# 0.98x at 64 px (vanilla KD 0.86x, 0.82x, 0.91x): these steps are too small for bf16 tensor
# cores to repay autocast's casts, so amp: auto keeps float32 up to this image side and uses bf16
# above it (ImageNet-sized inputs, not measured here, where the torch docs' advice holds)
AMP_AUTO_ABOVE_PIXELS = 64
PROBE_STEPS = 3  # eager steps timed (after a first warm-up step) before auto decides


@dataclass(frozen=True)
class CompileChoice:
    """Whether to compile (with CUDA graphs or not), and the one line that says why."""

    compile: bool
    reason: str
    graphs: bool = False


def compile_choice(mode: str, remaining_steps: int, step_seconds: float | None, device: torch.device) -> CompileChoice:
    """``on``/``off`` as asked; ``graphs``: on, with CUDA graphs where the device is CUDA;
    ``auto`` compiles (without graphs) when ``remaining_steps`` eager steps of ``step_seconds``
    would take longer than compiling plus the same steps compiled."""
    if mode == "on":
        return CompileChoice(True, "optim.compile: on")
    if mode == "graphs":
        if device.type == "cuda":
            return CompileChoice(True, "optim.compile: graphs (torch.compile with CUDA graphs)", graphs=True)
        return CompileChoice(True, f"optim.compile: graphs -> on (CUDA graphs need a CUDA device, not {device.type})")
    if mode == "off":
        return CompileChoice(False, "optim.compile: off")
    cost = COMPILE_SECONDS.get(device.type, COMPILE_SECONDS["cuda"])
    gain = COMPILE_SPEEDUP.get(device.type, COMPILE_SPEEDUP["cuda"])
    if step_seconds is None:
        return CompileChoice(False, f"optim.compile: auto -> off ({remaining_steps} steps: too few to measure a step)")
    saved = remaining_steps * step_seconds * (1.0 - 1.0 / gain)
    verdict = "on" if saved > cost else "off"
    return CompileChoice(
        saved > cost,
        f"optim.compile: auto -> {verdict} ({remaining_steps} steps x {step_seconds * 1000:.0f} ms eager: "
        f"compiling would save about {saved:.0f} s for about {cost:.0f} s of compile on {device.type})",
    )


def compile_distiller(distiller: OFADistiller, *, graphs: bool = False) -> None:
    """Compile the student's forward with its exit branches (one graph: the branches are most of
    the OFA step's work) and a live teacher, in place: parameter names and state dicts stay as
    they are, so checkpoints, EMA and DDP see the same modules (the torch docs' advice: compile
    the inner module, not the DDP wrapper). ``graphs``: replayed as CUDA graphs (the training
    loop marks each step's start, so one step's outputs are never taken for the last one's)."""
    mode = "reduce-overhead" if graphs else None
    distiller.student_forward = torch.compile(distiller.student_forward, mode=mode)  # type: ignore[method-assign]
    if distiller.teacher is not None:
        distiller.teacher.compile(mode=mode)


def uncompile_distiller(distiller: OFADistiller) -> None:
    """Undo :func:`compile_distiller` so the distiller pickles and runs eagerly again (what a
    caller gets back from ``fit`` is a plain module)."""
    distiller.__dict__.pop("student_forward", None)
    if distiller.teacher is not None and getattr(distiller.teacher, "_compiled_call_impl", None) is not None:
        distiller.teacher._compiled_call_impl = None


@dataclass(frozen=True)
class AmpChoice:
    """The autocast dtype (None: float32), and the one line that says why."""

    dtype: torch.dtype | None
    reason: str


def amp_choice(mode: str, device: torch.device, image_size: int) -> AmpChoice:
    """``optim.amp`` on ``device`` for ``image_size``-pixel inputs. CPU: always float32 (bf16
    autocast made the OFA step slower on the CPU measured). CUDA: ``bf16``/``fp16`` as
    asked; ``auto`` is float32 up to :data:`AMP_AUTO_ABOVE_PIXELS` (measured slower there), above
    it bf16 where the GPU supports it (``torch.cuda.is_bf16_supported``), else fp16."""
    if device.type != "cuda":
        return AmpChoice(None, f"optim.amp: {mode} -> off (a {device.type} trains in float32)")
    if mode == "off":
        return AmpChoice(None, "optim.amp: off")
    if mode in ("bf16", "fp16"):
        return AmpChoice(torch.bfloat16 if mode == "bf16" else torch.float16, f"optim.amp: {mode}")
    if image_size <= AMP_AUTO_ABOVE_PIXELS:
        return AmpChoice(
            None,
            f"optim.amp: auto -> off ({image_size} px: at most {AMP_AUTO_ABOVE_PIXELS} px, bf16 autocast "
            "measured 0.6-1.0x the float32 step on an H100)",
        )
    half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    name = "bf16" if half == torch.bfloat16 else "fp16 with loss scaling (no bf16 on this GPU)"
    return AmpChoice(half, f"optim.amp: auto -> {name} ({image_size} px > {AMP_AUTO_ABOVE_PIXELS} px)")


def is_cnn(model: nn.Module) -> bool:
    """A convolutional network (more than one Conv2d; a ViT has only its patch embedding), whose
    convolutions run faster channels-last on CUDA."""
    return sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 1


def to_channels_last(distiller: OFADistiller, device: torch.device) -> bool:
    """Put a CNN student (and CNN teacher) in channels-last memory on CUDA; True when the
    student is (the loop then feeds channels-last images). A CPU keeps the default layout."""
    if device.type != "cuda":
        return False
    if distiller.teacher is not None and is_cnn(distiller.teacher):
        distiller.teacher.to(memory_format=torch.channels_last)
    if not is_cnn(distiller.student):
        return False
    distiller.student.to(memory_format=torch.channels_last)
    return True


@contextmanager
def cpu_threads(cpus: float) -> Iterator[None]:
    """Torch's CPU thread count as a trial has it (``resources.cpus_per_worker``, at least one)
    for a block, then as it was: float reductions, hence results and timings, depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus)))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
