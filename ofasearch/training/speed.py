"""How the training loop runs fast without changing what it computes: ``torch.compile`` of the
student and exit branches (``optim.compile``), mixed precision on CUDA (``optim.amp``) and
channels-last memory for CNNs on CUDA.

``compile: auto`` decides from measurement, not a guess: the loop times a few eager steps, then
compiles only when the run's remaining steps at the expected speed-up repay the compile time
(see :data:`COMPILE_SPEEDUP` for what was measured).
The CUDA branches (autocast dtypes, loss scaling, channels-last) follow the torch docs; they
could not be run on the machine this was written on (no GPU): ``scripts/gpu_check.py`` checks them.
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
    "COMPILE_SECONDS",
    "COMPILE_SPEEDUP",
    "PROBE_STEPS",
    "amp_dtype",
    "compile_choice",
    "compile_distiller",
    "cpu_threads",
    "is_cnn",
    "to_channels_last",
    "uncompile_distiller",
]

log = logging.getLogger(__name__)

# what one compile of the OFA step costs (seconds) and gains (eager time / compiled time). CPU:
# measured on 2 cores, 1 thread (resnet10t -> ViT 4x64, 28 px, batch 128, student forward and
# branches compiled): 54 s to compile, 0.96-1.04x (issue 15 saw 1.31x compiling more of the step),
# so auto compiles on a CPU only for very long runs. CUDA: not measured yet (no GPU here), an
# estimate for scripts/gpu_check.py to replace
COMPILE_SECONDS = {"cpu": 55.0, "cuda": 60.0}
COMPILE_SPEEDUP = {"cpu": 1.05, "cuda": 1.5}
PROBE_STEPS = 3  # eager steps timed (after a first warm-up step) before auto decides


@dataclass(frozen=True)
class CompileChoice:
    """Whether to compile, and the one line that says why."""

    compile: bool
    reason: str


def compile_choice(mode: str, remaining_steps: int, step_seconds: float | None, device: torch.device) -> CompileChoice:
    """``on``/``off`` as asked; ``auto`` compiles when ``remaining_steps`` eager steps of
    ``step_seconds`` would take longer than compiling plus the same steps compiled."""
    if mode == "on":
        return CompileChoice(True, "optim.compile: on")
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


def compile_distiller(distiller: OFADistiller) -> None:
    """Compile the student's forward with its exit branches (one graph: the branches are most of
    the OFA step's work) and a live teacher, in place: parameter names and state dicts stay as
    they are, so checkpoints, EMA and DDP see the same modules (the torch docs' advice: compile
    the inner module, not the DDP wrapper)."""
    distiller.student_forward = torch.compile(distiller.student_forward)  # type: ignore[method-assign]
    if distiller.teacher is not None:
        distiller.teacher.compile()


def uncompile_distiller(distiller: OFADistiller) -> None:
    """Undo :func:`compile_distiller` so the distiller pickles and runs eagerly again (what a
    caller gets back from ``fit`` is a plain module)."""
    distiller.__dict__.pop("student_forward", None)
    if distiller.teacher is not None and getattr(distiller.teacher, "_compiled_call_impl", None) is not None:
        distiller.teacher._compiled_call_impl = None


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``optim.amp`` on ``device`` (None: float32). CPU: always None (bf16
    autocast made the OFA step slower on the CPU measured, issue 15). CUDA: ``auto`` is bf16 where
    the GPU supports it (``torch.cuda.is_bf16_supported``), else fp16."""
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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
