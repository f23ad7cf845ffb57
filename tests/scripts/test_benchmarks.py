"""The benchmark scripts run end to end on tiny settings (their figures come from full runs)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts Ray or trains a model: not in the fast tier

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("bench_step.py", "speed options on"),
        ("bench_teacher_cache.py", "predicted GPU speed-up"),
        ("bench_recipes.py", "float16 full logits, views = epochs: 3.00 GB"),
        ("bench_views.py", "tensor views, host"),
    ],
)
def test_benchmark_smoke(script, expected):
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--smoke-test"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected in result.stdout


def test_gpu_check_smoke_test_prints_the_device_table():
    """The device table's rows (loop against bare step, packed trials) on tiny settings, on the CPU."""
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "gpu_check.py"), "--smoke-test"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for expected in ("logit cache", "live teacher", "vs bare student step", "2 packed trial(s) at 32 px"):
        assert expected in result.stdout


def test_gpu_check_says_plainly_that_it_needs_cuda():
    """CI has no GPU: the check exits 2 with one line (its CUDA runs need a GPU machine)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: run scripts/gpu_check.py itself")
    script = str(SCRIPTS / "gpu_check.py")
    result = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == (
        "gpu_check: CUDA sees no GPU on this machine; run this on a machine with an NVIDIA GPU"
    )
