"""plan(): what `validate`, `run` and `train` check before anything trains (real data, real timm
models): each model runs at the data's image size, and ASHA's grace period ends after the warm-up."""

import pytest

from ofasearch import SpecError
from ofasearch.config import parse_spec
from ofasearch.search.plan import check_grace, plan
from tests.helpers.logcapture import log_lines
from tests.helpers.specs import MIXER, SPEC, TEACHER


def _spec(**sections):
    return parse_spec({**SPEC, "pairs": [{"teacher": TEACHER, "student": MIXER}], **sections})


def test_a_convnext_teacher_at_28_px_is_one_line_naming_model_and_size():
    spec = _spec(
        data={"dataset": "digits", "image_size": 28},
        pairs=[{"teacher": {"model": "convnext_atto"}, "student": MIXER}],
    )
    with pytest.raises(SpecError) as caught:
        plan(spec)
    (line,) = caught.value.problems
    assert line.startswith("pairs[0].teacher: convnext_atto does not run at the data's image size, 28x28 px")
    assert "Kernel size can't be greater than actual input size" in line
    assert "\n" not in line
    spec32 = _spec(
        data={"dataset": "digits", "image_size": 32},
        pairs=[{"teacher": {"model": "convnext_atto"}, "student": MIXER}],
    )
    assert plan(spec32).available_stages, "the same teacher at 32 px passes"


@pytest.mark.parametrize(
    "warmup, epochs, grace",
    [(1, 3, 2), (0, 3, 1), (2, 9, 3), ({"choices": [0, 3]}, 9, 4), ({"low": 0, "high": 2}, 9, 3), (5, 3, 3)],
)
def test_default_grace_is_the_first_epoch_after_the_longest_warmup(warmup, epochs, grace):
    spec = _spec(optim={**SPEC["optim"], "epochs": epochs, "warmup_epochs": warmup}, search={"num_samples": 4})
    assert spec.search.grace_epochs == grace
    check_grace(spec)  # the default always passes


def test_a_grace_inside_the_warmup_is_refused_by_validate():
    spec = _spec(optim={**SPEC["optim"], "warmup_epochs": 1}, search={"num_samples": 4, "grace_epochs": 1})
    with pytest.raises(SpecError) as caught:
        plan(spec)
    assert caught.value.problems == [
        "search.grace_epochs: 1 ends inside the warm-up (optim.warmup_epochs: 1), where every trial scores about "
        "the same and ASHA would stop them at random; must be >= 2 (leave it out: the default is 2)"
    ]
    no_warmup = _spec(optim={**SPEC["optim"], "warmup_epochs": 0}, search={"num_samples": 4, "grace_epochs": 1})
    check_grace(no_warmup)


def _constrained(constraints, pairs=None):
    return parse_spec(
        {**SPEC, **({"pairs": pairs} if pairs else {}), "search": {**SPEC["search"], "constraints": constraints}}
    )


def test_constraints_drop_the_student_over_the_limit_and_keep_the_other():
    # the 4-block ViT has 115,354 parameters, the 2-block Mixer 40,746 (timm 1.0, 10 digit classes)
    spec = _constrained({"max_params": 60_000, "max_latency_ms": 10_000})
    with log_lines() as lines:
        space = plan(spec)
    assert [pair.student.model for pair in space.spec.pairs] == ["MlpMixer"]
    assert space.available_stages == [[3, 4]], "the kept pair's stages, not the dropped one's"
    (dropped,) = [line for line in lines if line.startswith("dropped student")]
    assert dropped.startswith("dropped student vit_tiny_patch16_224(")
    assert dropped.endswith(": params 115,354 > search.constraints.max_params 60,000 (on cpu)")
    (kept,) = [line for line in lines if line.startswith("student MlpMixer")]
    assert "params 40,746, flops " in kept
    assert "latency_ms_b1 " in kept
    assert kept.endswith("meets search.constraints")
    assert [p.student.model for p in spec.pairs] == ["vit_tiny_patch16_224", "MlpMixer"], "the input spec is unchanged"


def test_flops_are_counted_and_limit_like_params():
    with log_lines() as lines:
        plan(_constrained({"max_flops": 10**12}))
    measured = [line for line in lines if line.startswith("student ")]
    assert len(measured) == 2
    assert all("flops " in line for line in measured)
    vit_flops = int(measured[0].split("flops ")[1].split(", latency")[0].replace(",", ""))
    mixer_flops = int(measured[1].split("flops ")[1].split(", latency")[0].replace(",", ""))
    assert vit_flops > mixer_flops > 100_000, (vit_flops, mixer_flops)
    space = plan(_constrained({"max_flops": (vit_flops + mixer_flops) // 2}))
    assert [pair.student.model for pair in space.spec.pairs] == ["MlpMixer"]


def test_no_student_left_is_one_error_line():
    with pytest.raises(SpecError) as caught:
        plan(_constrained({"max_params": 1000, "max_latency_ms": 1e-6}))
    (line,) = caught.value.problems
    assert line.startswith("search.constraints: no student meets {max_params: 1,000, max_latency_ms: 1e-06} (")
    assert "vit_tiny_patch16_224(" in line
    assert "MlpMixer(" in line
    assert "params 115,354 > " in line
    assert line.endswith("relax the limits or add smaller students")
    assert "\n" not in line
