"""plan(): what `validate`, `run` and `train` check before anything trains (real data, real timm
models): each model runs at the data's image size, and ASHA's grace period ends after the warm-up."""

import pytest

from ofasearch import SpecError
from ofasearch.config import parse_spec
from ofasearch.search.plan import check_grace, plan
from tests.specs import MIXER, SPEC, TEACHER


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
    assert "Kernel size can't be greater than actual input size" in line and "\n" not in line
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
