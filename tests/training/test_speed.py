"""optim.compile / optim.amp / channels-last: what each decides, and that compiling changes no numbers."""

import logging
import time

import pytest
import torch

from ofasearch.config import parse_config
from ofasearch.data import load_splits
from ofasearch.distill import OFADistiller
from ofasearch.errors import SpecError
from ofasearch.models import build_model
from ofasearch.training.loop import fit
from ofasearch.training.speed import AMP_AUTO_ABOVE_PIXELS, amp_choice, compile_choice, is_cnn, to_channels_last

CPU = torch.device("cpu")


def _config(compile_mode: str, epochs: int = 1, method: str = "ofa"):
    return parse_config(
        {
            "data": {"dataset": "digits", "image_size": 16, "train_subset": 64, "val_size": 40},
            "pairs": [
                {
                    "teacher": {"model": "resnet10t"},
                    "student": {"model": "resnet10t"},
                }
            ],
            "distill": {"method": method, "teacher_cache": "off", "stages": [3, 4]},
            "optim": {"epochs": epochs, "batch_size": 16, "warmup_epochs": 0, "compile": compile_mode},
        }
    )


def _distiller(config, splits) -> OFADistiller:
    torch.manual_seed(0)
    teacher = build_model("resnet10t", **splits.model_args).eval()
    return OFADistiller.from_config(config, teacher, **splits.model_args)


def test_auto_compiles_only_when_the_steps_repay_the_compile_time():
    assert compile_choice("on", 1, None, CPU).compile
    assert not compile_choice("off", 10**9, 10.0, CPU).compile
    few = compile_choice("auto", 20, 0.5, CPU)  # 20 x 0.5 s x (1 - 1/1.05) = 0.5 s saved, < 55 s of compile
    many = compile_choice("auto", 20_000, 0.5, CPU)
    assert not few.compile
    assert "auto -> off" in few.reason
    assert "20 steps" in few.reason
    assert many.compile
    assert "auto -> on" in many.reason
    assert not compile_choice("auto", 3, None, CPU).compile
    assert not many.graphs, "auto never chooses CUDA graphs: not measured on a GPU yet"


def test_graphs_is_cuda_graphs_on_cuda_and_plain_compile_elsewhere():
    on_cpu = compile_choice("graphs", 10, None, CPU)
    assert on_cpu.compile and not on_cpu.graphs
    assert on_cpu.reason == "optim.compile: graphs -> on (CUDA graphs need a CUDA device, not cpu)"
    on_cuda = compile_choice("graphs", 10, None, torch.device("cuda"))  # a choice only: nothing runs on it
    assert on_cuda.compile and on_cuda.graphs
    assert on_cuda.reason == "optim.compile: graphs (torch.compile with CUDA graphs)"


def test_amp_auto_keeps_float32_for_small_inputs_on_cuda():
    """bf16 autocast measured slower than float32 on an H100 up to 64 px (speed.py): auto keeps
    float32 there and says so; bf16 / fp16 / off are taken as asked (no GPU is touched to decide)."""
    cuda = torch.device("cuda")
    small = amp_choice("auto", cuda, AMP_AUTO_ABOVE_PIXELS)
    assert small.dtype is None
    assert "auto -> off (64 px" in small.reason
    assert amp_choice("bf16", cuda, 32).dtype == torch.bfloat16
    assert amp_choice("fp16", cuda, 32).dtype == torch.float16
    assert amp_choice("off", cuda, 224).dtype is None


def test_amp_and_channels_last_leave_the_cpu_path_alone():
    """A CPU trains in float32 and the default memory layout whatever optim.amp says."""
    assert all(amp_choice(mode, CPU, 224).dtype is None for mode in ("auto", "bf16", "fp16", "off"))
    assert is_cnn(build_model("resnet10t", num_classes=10, in_chans=1, image_size=16))
    assert not is_cnn(
        build_model("vit_tiny_patch16_224", {"patch_size": 4, "depth": 1}, num_classes=10, in_chans=1, image_size=16)
    )
    config = _config("off")
    splits = load_splits(config.data)
    d = _distiller(config, splits)
    assert not to_channels_last(d, CPU)
    assert all(p.is_contiguous() for p in d.parameters())


@pytest.mark.parametrize("field, value", [("amp", "fp32"), ("compile", "yes")])
def test_a_bad_speed_setting_is_one_line_naming_the_field(field, value):
    with pytest.raises(SpecError) as err:
        parse_config(
            {
                "data": {"dataset": "digits"},
                "pairs": [{"teacher": {"model": "resnet10t"}, "student": {"model": "resnet10t"}}],
                "optim": {field: value},
            }
        )
    text = str(err.value)
    assert f"optim.{field}" in text
    assert "'off'" in text
    assert "\n" not in text.strip()


def test_amp_true_and_false_from_older_specs_still_parse():
    config = _config("off")
    assert config.optim.amp == "auto"
    assert config.optim.compile == "off"
    assert parse_config({**config.model_dump(mode="json"), "optim": {"amp": False}}).optim.amp == "off"


def test_auto_says_off_for_a_tiny_run(caplog):
    config = _config("auto")
    splits = load_splits(config.data)
    with caplog.at_level(logging.INFO, logger="ofasearch.training.loop"):
        result = fit(_distiller(config, splits), splits, config.optim, seed=0, device=CPU, evaluate_test=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("optim.compile")]
    assert lines == ["optim.compile: auto -> off (4 steps: too few to measure a step)"], lines
    assert not result.diverged


@pytest.mark.slow  # compiles a student, its exit branches and a teacher (about a minute on 2 cores)
def test_compiled_training_computes_what_eager_training_does():
    """Two epochs of 4 updates each of a real timm pair, compiled and eager from the same start:
    the same losses and weights within float32 tolerance, and the distiller comes back uncompiled."""
    config_on, config_off = _config("on", epochs=2), _config("off", epochs=2)
    splits = load_splits(config_on.data)
    eager = fit(_distiller(config_off, splits), splits, config_off.optim, seed=0, device=CPU, evaluate_test=False)
    start = time.perf_counter()
    d = _distiller(config_on, splits)
    compiled = fit(d, splits, config_on.optim, seed=0, device=CPU, evaluate_test=False)
    print(f"compiled fit: {time.perf_counter() - start:.1f} s (eager {eager.train_seconds:.1f} s of training)")
    for a, b in zip(eager.history, compiled.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4, abs=1e-5)
        assert a.parts.keys() == b.parts.keys()
        assert all(a.parts[k] == pytest.approx(b.parts[k], rel=1e-4, abs=1e-5) for k in a.parts)
        assert a.val_acc == pytest.approx(b.val_acc, abs=1 / 40 + 1e-9)  # one of 40 images may flip
    # AdamW divides by the gradient's running RMS: where a gradient is ~0, float rounding can
    # move a weight by up to lr (1e-3) the other way, and a bias-corrected Adam step may exceed lr
    # a little (2.009 lr seen); everything else must agree closely
    want = dict(eager.distiller.student.named_parameters())
    close = total = 0
    for key, value in d.student.named_parameters():
        diff = (value.detach() - want[key].detach()).abs()
        assert float(diff.max()) <= 2.5 * config_on.optim.lr, key
        close, total = close + int((diff <= 1e-4).sum()), total + diff.numel()
    assert close >= 0.99 * total, f"{total - close} of {total} weights differ by more than 1e-4"
    assert "student_forward" not in d.__dict__
    assert d.teacher._compiled_call_impl is None
