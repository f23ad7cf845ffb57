import pytest
import torch

from ofasearch import OFADistiller, SpecError
from ofasearch.distill.branches import ConvBranch, TokenBranch
from ofasearch.models import build_model

SIZE = 32
STUDENTS = {
    "resnet18": ("resnet18", {}, ConvBranch),
    "mobilenetv3": ("mobilenetv3_small_050", {}, ConvBranch),
    "convnext": ("convnext_atto", {}, ConvBranch),
    "efficientnet": ("efficientnet_b0", {}, ConvBranch),
    "vit": ("vit_tiny_patch16_224", {"patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 2}, TokenBranch),
    "deit": ("deit_tiny_patch16_224", {"patch_size": 8}, TokenBranch),
    "swin": (
        "swin_tiny_patch4_window7_224",
        {"patch_size": 2, "window_size": 4, "embed_dim": 24, "depths": (1, 1, 2, 1), "num_heads": (1, 1, 2, 2)},
        TokenBranch,
    ),
    "mixer": ("MlpMixer", {"patch_size": 4, "num_blocks": 4, "embed_dim": 64}, TokenBranch),
    "metaformer": ("poolformer_s12", {}, ConvBranch),
}


@pytest.fixture(scope="module")
def teacher():
    return build_model("resnet10t", num_classes=10, in_chans=1, image_size=SIZE)


@pytest.mark.parametrize("key", list(STUDENTS))
def test_branches_give_logits_and_gradients(key, teacher):
    name, kwargs, branch_type = STUDENTS[key]
    student = build_model(name, kwargs, num_classes=10, in_chans=1, image_size=SIZE)
    d = OFADistiller(student, teacher, num_classes=10, stages=(1, 2, 3, 4), eps=1.2, input_size=(1, SIZE, SIZE))
    d.train()
    images, labels = torch.rand(3, 1, SIZE, SIZE), torch.randint(0, 10, (3,))
    logits, exits = d.student_forward(images)
    assert logits.shape == (3, 10)
    assert sorted(exits) == [1, 2, 3, 4]
    assert all(e.shape == (3, 10) for e in exits.values())
    assert all(isinstance(b, branch_type) for b in d.branches.values())
    loss, parts = d(images, labels)
    assert set(parts) >= {"gt", "kd", "ofa"}
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in d.branches.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training, "the teacher must stay in eval mode"
    assert d.student is student
    assert not any(n.startswith("branches") for n, _ in student.named_parameters())


def test_twelve_block_vit_uses_reference_blocks(teacher):
    student = build_model("deit_tiny_patch16_224", {"patch_size": 8}, num_classes=10, in_chans=1, image_size=SIZE)
    d = OFADistiller(student, teacher, num_classes=10, input_size=(1, SIZE, SIZE))
    assert d._indices == [1, 3, 9, 11]


def test_per_stage_eps_needs_one_per_stage_plus_final(teacher):
    student = build_model("resnet10t", num_classes=10, in_chans=1, image_size=SIZE)
    d = OFADistiller(student, teacher, 10, stages=(3, 4), eps=[1.1, 1.2, 1.3], input_size=(1, SIZE, SIZE))
    assert d.eps == (1.1, 1.2, 1.3)
    with pytest.raises(SpecError, match="distill.eps"):
        OFADistiller(student, teacher, 10, stages=(3, 4), eps=[1.1, 1.2], input_size=(1, SIZE, SIZE))


def test_baselines_build_no_branches(teacher):
    student = build_model("resnet10t", num_classes=10, in_chans=1, image_size=SIZE)
    for method in ("kd", "none"):
        d = OFADistiller(student, teacher if method == "kd" else None, 10, method=method, input_size=(1, SIZE, SIZE))
        assert len(d.branches) == 0
        loss, parts = d(torch.rand(2, 1, SIZE, SIZE), torch.tensor([1, 2]))
        assert ("kd" in parts) == (method == "kd")
        assert "ofa" not in parts


def test_stage_missing_from_a_shallow_student_is_a_spec_error(teacher):
    student = build_model(
        "vit_tiny_patch16_224",
        {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 1},
        num_classes=10,
        in_chans=1,
        image_size=SIZE,
    )
    with pytest.raises(SpecError, match="distill.stages"):
        OFADistiller(student, teacher, 10, stages=(1, 2, 3, 4), input_size=(1, SIZE, SIZE))


def test_a_loss_object_for_every_registered_loss_and_no_other():
    from ofasearch.config.registry import LOSSES as NAMES
    from ofasearch.distill import LOSSES

    assert set(LOSSES) == set(NAMES)
    for name, cls in LOSSES.items():  # each object takes the parameters the registry maps to settings
        assert set(NAMES[name].params) <= set(cls.__dataclass_fields__)


def test_from_config_seeds_the_student_and_drops_a_teacher_the_method_does_not_use(teacher):
    from ofasearch.config import parse_config
    from tests.helpers.specs import CONFIG

    config = parse_config(CONFIG)
    shape = {"num_classes": 10, "in_chans": 1, "image_size": 16}
    first = OFADistiller.from_config(config, teacher, **shape)
    torch.rand(100)  # a changed global RNG: from_config seeds with config.seed
    second = OFADistiller.from_config(config, None, teacher_features=teacher.num_features, **shape)
    assert first.stages == (2, 3, 4)
    assert first.eps == (1.2,) * 4
    assert first.teacher is teacher
    for part in ("student", "branches"):
        a, b = getattr(first, part).state_dict(), getattr(second, part).state_dict()
        assert a.keys() == b.keys(), f"{part} start the same"
        assert all(torch.equal(a[k], b[k]) for k in a), f"{part} start the same"
    alone = parse_config({**CONFIG, "distill": {"method": "none"}})
    d = OFADistiller.from_config(alone, teacher, **shape)
    assert d.teacher is None
    assert len(d.branches) == 0
