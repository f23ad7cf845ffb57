import pytest
import torch
from torch import nn

from ofasearch import SpecError
from ofasearch.models import build_model, describe_model, stage_indices, unknown_model_message


class Plain(nn.Module):
    """Any model with N equal-resolution features: the rule depends only on feature_info."""

    def __init__(self, n: int):
        super().__init__()
        self.feature_info = [{"reduction": 16, "num_chs": 8, "module": f"blocks.{i}"} for i in range(n)]
        self.forward_intermediates = lambda *a, **k: None


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        (12, {1: 1, 2: 3, 3: 9, 4: 11}),
        (6, {1: 0, 2: 1, 3: 4, 4: 5}),
        (4, {1: 0, 2: 1, 3: 2, 4: 3}),
        (8, {1: 1, 2: 2, 3: 6, 4: 7}),
        (3, {2: 0, 3: 1, 4: 2}),
    ],
)
def test_plain_models_spread_stages_over_depth(blocks, expected):
    assert stage_indices(Plain(blocks)) == expected


def test_hierarchical_models_use_their_last_four_features():
    resnet = build_model("resnet18", num_classes=10, in_chans=3, image_size=32)  # stem + 4 stages
    assert stage_indices(resnet) == {1: 1, 2: 2, 3: 3, 4: 4}
    convnext = build_model("convnext_atto", num_classes=10, in_chans=3, image_size=32)
    assert stage_indices(convnext) == {1: 0, 2: 1, 3: 2, 4: 3}


@pytest.mark.parametrize(
    ("name", "kwargs", "family"),
    [
        ("resnet10t", {}, "cnn"),
        ("convnext_atto", {}, "cnn"),
        ("vit_tiny_patch16_224", {"patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 1}, "vit"),
        (
            "swin_tiny_patch4_window7_224",
            {"patch_size": 2, "window_size": 4, "embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)},
            "vit",
        ),
        ("MlpMixer", {"patch_size": 8, "num_blocks": 4, "embed_dim": 32}, "mlp"),
    ],
)
def test_family_is_measured_from_the_model(name, kwargs, family):
    model = build_model(name, kwargs, num_classes=10, in_chans=1, image_size=32)
    info = describe_model(model, (1, 32, 32))
    assert info.family == family
    assert info.tokens == (family != "cnn")


@pytest.mark.parametrize(
    ("name", "kwargs", "family", "tokens"),
    [
        # transformers whose attention classes are not named "...Attention"
        ("cait_xxs24_224", {"depth": 2, "embed_dim": 48, "num_heads": 2, "patch_size": 4}, "vit", True),
        ("xcit_nano_12_p16_224", {"depth": 2, "patch_size": 8}, "vit", True),
        ("twins_pcpvt_small", {}, "vit", True),
        ("pvt_v2_b0", {}, "vit", False),  # a transformer with NCHW features: map branches
        ("gcresnet33ts", {}, "cnn", False),  # a softmax over positions (global context) is not attention
    ],
)
def test_attention_is_recognised_by_what_the_forward_computes(name, kwargs, family, tokens):
    model = build_model(name, kwargs, num_classes=10, in_chans=3, image_size=32)
    info = describe_model(model, (3, 32, 32))
    assert info.family == family
    assert info.tokens == tokens


def test_img_size_comes_from_the_data_unless_kwargs_say_otherwise():
    vit = build_model(
        "vit_tiny_patch16_224",
        {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 1},
        num_classes=3,
        in_chans=1,
        image_size=28,
    )
    assert vit.eval()(torch.zeros(1, 1, 28, 28)).shape == (1, 3)
    resnet = build_model("resnet10t", num_classes=3, in_chans=1, image_size=28)  # no img_size argument
    assert resnet.eval()(torch.zeros(1, 1, 28, 28)).shape == (1, 3)


def test_unknown_model_names_get_close_matches():
    assert unknown_model_message("resnet18") is None
    assert unknown_model_message("MlpMixer") is None
    message = unknown_model_message("resnet81")
    assert message is not None
    assert "resnet18" in message
    with pytest.raises(SpecError, match="unknown timm model 'convnxt_atto'.*convnext_atto"):
        build_model("convnxt_atto", num_classes=10, in_chans=1, image_size=32)


def test_bad_kwargs_are_a_spec_error():
    with pytest.raises(SpecError, match="bad kwargs"):
        build_model("resnet10t", {"no_such_argument": 1}, num_classes=10, in_chans=1, image_size=32)
