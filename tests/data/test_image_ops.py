"""Each batched op gives, image by image, the pixels of the Pillow op timm's auto-augment runs."""

import pytest
import torch
from PIL import Image
from timm.data import auto_augment as timm_ops
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

from ofasearch.data import image_ops

FILL = (124, 116, 104)


def photos(n: int, channels: int, size: int = 40) -> torch.Tensor:
    """Smooth colour fields with sensor-like noise: every level of every op is exercised."""
    g = torch.Generator().manual_seed(channels)
    base = torch.rand(n, channels, 6, 6, generator=g)
    x = torch.nn.functional.interpolate(base, size=(size, size), mode="bicubic", align_corners=False) * 255
    return (x + torch.randn(n, channels, size, size, generator=g) * 18).clamp(0, 255).to(torch.uint8)


def timm_pixels(images: torch.Tensor, op, args: list, **kwargs) -> torch.Tensor:
    """timm's PIL op on each image, with that image's argument."""
    out = []
    for image, arg in zip(images, args, strict=True):
        pil = to_pil_image(image[0] if image.shape[0] == 1 else image)
        result = op(pil, *([] if arg is None else [arg]), **kwargs)
        out.append(pil_to_tensor(result))
    return torch.stack(out)


PARAMETRIC = [
    (image_ops.color, timm_ops.color, [0.1, 0.55, 1.0, 1.45, 1.9]),
    (image_ops.contrast, timm_ops.contrast, [0.1, 0.55, 1.0, 1.45, 1.9]),
    (image_ops.brightness, timm_ops.brightness, [0.1, 0.55, 1.0, 1.45, 1.9]),
    (image_ops.sharpness, timm_ops.sharpness, [0.1, 0.55, 1.0, 1.45, 1.9]),
    (image_ops.posterize, timm_ops.posterize, [1, 2, 3, 4, 8]),
    (image_ops.solarize, timm_ops.solarize, [0, 40, 128, 200, 256]),
    (image_ops.solarize_add, timm_ops.solarize_add, [0, 30, 60, 90, 110]),
]


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize(("ours", "theirs", "args"), PARAMETRIC, ids=lambda v: getattr(v, "__name__", ""))
def test_parametric_ops_are_pillows_with_one_argument_per_image(ours, theirs, args, channels):
    images = photos(len(args), channels)
    assert torch.equal(ours(images, args), timm_pixels(images, theirs, args))


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (image_ops.auto_contrast, timm_ops.auto_contrast),
        (image_ops.equalize, timm_ops.equalize),
        (image_ops.invert, timm_ops.invert),
    ],
    ids=["auto_contrast", "equalize", "invert"],
)
def test_plain_ops_are_pillows(ours, theirs, channels):
    images = photos(6, channels)
    images[0, :, :, :] = 77  # a flat image: autocontrast leaves it, equalize has one level
    assert torch.equal(ours(images), timm_pixels(images, theirs, [None] * len(images)))


def test_posterize_to_zero_bits_is_black():
    """timm's increasing posterize can ask for 0 bits (newer Pillow refuses them; older kept none)."""
    images = photos(2, 3)
    assert not image_ops.posterize(images, [0, 0]).any()


GEOMETRIC = [
    (timm_ops.shear_x, [-0.3, -0.11, 0.0, 0.17, 0.3], lambda a, size: (1, a, 0, 0, 1, 0)),
    (timm_ops.shear_y, [-0.3, -0.11, 0.0, 0.17, 0.3], lambda a, size: (1, 0, 0, a, 1, 0)),
    (timm_ops.translate_x_rel, [-0.45, -0.2, 0.0, 0.13, 0.45], lambda a, size: (1, 0, a * size, 0, 1, 0)),
    (timm_ops.translate_y_rel, [-0.45, -0.2, 0.0, 0.13, 0.45], lambda a, size: (1, 0, 0, 0, 1, a * size)),
    (timm_ops.rotate, [-30.0, -7.3, 0.0, 12.9, 90.0, 180.0], image_ops.rotation_matrix),
]


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize(("theirs", "args", "matrix"), GEOMETRIC, ids=lambda v: getattr(v, "__name__", ""))
def test_affine_is_pillows_transform_for_both_kernels_at_once(theirs, args, matrix, channels):
    """Bilinear and bicubic images in one call, each with its own matrix; outside the source,
    timm's fill colour."""
    images = photos(len(args), channels)
    fill = FILL[:channels]
    bicubic = [i % 2 == 1 for i in range(len(args))]
    size = images.shape[-1]
    if theirs is timm_ops.rotate:
        matrices = [matrix(a, size, size) for a in args]
    else:
        matrices = [matrix(a, size) for a in args]
    ours = image_ops.affine(images, matrices, bicubic, fill)
    expected = []
    for image, arg, cubic in zip(images, args, bicubic, strict=True):
        resample = Image.Resampling.BICUBIC if cubic else Image.Resampling.BILINEAR
        expected.append(timm_pixels(image[None], theirs, [arg], resample=resample, fillcolor=fill)[0])
    assert torch.equal(ours, torch.stack(expected))


def test_ops_run_on_any_device_they_are_given():
    """The ops make no host round trip: their output lives where their input does (the meta device
    stands in for a GPU here: it has no data, only placement and shapes)."""
    images = photos(4, 3).to("meta")
    assert image_ops.color(images, [0.5] * 4).device.type == "meta"
    assert image_ops.posterize(images, [2] * 4).device.type == "meta"
