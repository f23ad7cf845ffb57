"""The paper's Swin-N and Swin-P, registered with timm under the reference's names."""

import pytest
import timm
import torch
from timm.models.swin_transformer import SwinTransformer

from ofasearch import SpecError
from ofasearch.models import build_model
from ofasearch.models.zoo import SWIN_LAYOUTS

# Parameters at 100 and 1000 classes, 224 px, worked out by hand from the reference's definition
# (Hao840/OFAKD f7bb896 custom_model/swin_transformer.py:7-22 on timm 0.6.5's SwinTransformer; the
# same count gives swin_tiny's 28,288,354)
REFERENCE_PARAMETERS = {
    "swin_nano_patch4_window7_224": (9_138_240, 9_599_940),
    "swin_pico_patch4_window7_224": (5_160_496, 5_506_996),
}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(REFERENCE_PARAMETERS))
def test_registered_swin_has_the_reference_layout_and_size(name):
    with torch.device("meta"):
        ours = timm.create_model(name, num_classes=100)
        by_hand = SwinTransformer(
            patch_size=4,
            window_size=7,
            embed_dim={"swin_nano_patch4_window7_224": 64, "swin_pico_patch4_window7_224": 48}[name],
            depths=(2, 2, 2, 2),
            num_heads=(2, 4, 8, 16),
            num_classes=100,
        )
        thousand = timm.create_model(name)
    assert (_count(ours), _count(thousand)) == REFERENCE_PARAMETERS[name]
    assert _count(ours) == _count(by_hand)
    assert [len(stage.blocks) for stage in ours.layers] == [2, 2, 2, 2]
    assert [stage.blocks[0].attn.num_heads for stage in ours.layers] == [2, 4, 8, 16]
    assert ours.num_features == SWIN_LAYOUTS[name]["embed_dim"] * 8
    assert ours.pretrained_cfg["crop_pct"] == 0.9
    assert ours.pretrained_cfg["interpolation"] == "bicubic"


def test_swin_pico_builds_for_small_images_and_has_no_hub_weights():
    model = build_model("swin_pico_patch4_window7_224", num_classes=10, in_chans=3, image_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(SpecError, match="no published weights"):
        build_model("swin_pico_patch4_window7_224", num_classes=10, in_chans=3, image_size=32, pretrained=True)
