"""The self-describing student folder: timm's config.json, the one loader and its transform.

The fast tests build real timm students (random weights) and write their folder as a run does;
the slow one trains a student on real Fashion-MNIST and measures the test accuracy through
``load_student`` against feeding raw [0, 1] pixels, as the README's old snippet did.
"""

import json

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import save_model

from ofasearch import SpecError, load_config, load_student
from ofasearch.config import AugmentSpec, DataSpec
from ofasearch.data import Pipeline, find_fashion_mnist, load_splits, resize_images
from ofasearch.models import build_model, normalization
from ofasearch.models.student_folder import CARD_FILE, STUDENT_FILE, StudentTransform, model_card
from ofasearch.utils.files import CorruptFileError
from tests.helpers.specs import VIT

ARGS = {"num_classes": 10, "in_chans": 1, "image_size": 16}


def _write_student(folder, name, kwargs, **model_args):
    torch.manual_seed(0)
    model = build_model(name, kwargs, **model_args)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / STUDENT_FILE))
    card = model_card(name, kwargs, model, **model_args, files={STUDENT_FILE: folder / STUDENT_FILE})
    (folder / CARD_FILE).write_text(json.dumps(card))
    return model.eval(), card


@pytest.mark.parametrize("spec", [VIT, {"model": "resnet10t", "kwargs": {}}], ids=["vit", "resnet"])
def test_card_records_model_and_training_preprocessing(tmp_path, spec):
    model, card = _write_student(tmp_path, spec["model"], spec["kwargs"], **ARGS)
    mean, std = normalization(model, 1)
    cfg = card["pretrained_cfg"]
    assert cfg["input_size"] == [1, 16, 16]
    assert cfg["mean"] == list(mean)
    assert cfg["std"] == list(std)
    assert (cfg["interpolation"], cfg["crop_pct"], cfg["crop_mode"]) == ("bilinear", 1.0, "squash")
    assert card["ofasearch"]["input_range"] == [0.0, 1.0]
    assert card["model_args"]["num_classes"] == 10
    assert card["model_args"]["in_chans"] == 1
    assert ("img_size" in card["model_args"]) == (spec is VIT), "only models that take img_size get it"
    assert set(card["ofasearch"]["versions"]) == {"ofasearch", "torch", "timm", "ray", "optuna"}
    assert "url" not in cfg
    assert "hf_hub_id" not in cfg
    assert cfg["custom_load"] is False


def test_load_student_gives_the_same_model_and_timm_reads_the_folder(tmp_path):
    model, _card = _write_student(tmp_path, VIT["model"], VIT["kwargs"], **ARGS)
    loaded, transform = load_student(tmp_path)
    x = transform(torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert not loaded.training
        # timm alone: `local-dir:` reads config.json (architecture, model_args, pretrained_cfg)
        native = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
        assert torch.equal(native(x), model(x))
    data_cfg = timm.data.resolve_model_data_config(native)
    assert data_cfg["input_size"] == (1, 16, 16)
    assert list(data_cfg["mean"]) == list(transform.mean.flatten().tolist())


def test_transform_reproduces_the_training_input():
    """uint8 images at another size are resized exactly as ofasearch.data does, then normalised;
    a PIL image (even RGB for a grayscale student) gives the same tensor as its uint8 array."""
    transform = StudentTransform(16, (0.449,), (0.226,))
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    expected = (resize_images(images, 16).float() / 255.0 - 0.449) / 0.226
    assert torch.allclose(transform(images), expected, atol=1e-6)
    assert torch.allclose(transform(images[0]), expected[0], atol=1e-6), "one image (C, H, W) too"
    pil = Image.fromarray(images[0, 0].numpy(), mode="L")
    assert torch.equal(transform(pil), transform(images[0]))
    rgb = Image.fromarray(np.repeat(images[0, 0].numpy()[..., None], 3, axis=2), mode="RGB")
    assert torch.equal(transform(rgb), transform(images[0])), "grey RGB converts to the same L image"
    with pytest.raises(ValueError, match="3 channel"):
        transform(torch.zeros(3, 16, 16, dtype=torch.uint8))


@pytest.mark.parametrize(("crop_pct", "interpolation"), [(0.875, "bilinear"), (0.9, "bicubic")])
def test_an_rrc_student_is_fed_as_its_scoring_cut_the_images(crop_pct, interpolation):
    """A student of crop: rrc was scored on timm's eval cut (shorter side to size / crop_pct, the
    centre kept): its card says so and its transform gives exactly the scored input."""
    model = build_model("resnet10t", {}, **ARGS)
    card = model_card("resnet10t", {}, model, **ARGS, crop_pct=crop_pct, interpolation=interpolation)
    cfg = card["pretrained_cfg"]
    assert (cfg["crop_pct"], cfg["crop_mode"], cfg["interpolation"]) == (crop_pct, "center", interpolation)
    transform = StudentTransform.from_pretrained_cfg(cfg)
    splits = load_splits(DataSpec(dataset="digits", image_size=16, train_subset=20))
    augment = AugmentSpec(crop="rrc", eval_crop_pct=crop_pct, eval_interpolation=interpolation)
    pipeline = Pipeline(augment, splits)
    assert pipeline.eval_crop_pct == crop_pct
    wide = torch.randint(0, 256, (1, 20, 40), dtype=torch.uint8)  # not square: the cut matters
    scored = (pipeline.eval_images([wide]) - transform.mean) / transform.std
    torch.testing.assert_close(transform(wide), scored[0], rtol=0, atol=1e-6)
    squashed = StudentTransform(16, tuple(cfg["mean"]), tuple(cfg["std"]))(wide)
    assert not torch.allclose(squashed, scored[0], atol=0.1), "a square resize is another input"


def test_damaged_or_missing_artefact_is_one_clear_error(tmp_path):
    with pytest.raises(SpecError, match="no config.json"):
        load_student(tmp_path / "nothing")
    _write_student(tmp_path, VIT["model"], VIT["kwargs"], **ARGS)
    weights = tmp_path / STUDENT_FILE
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="SHA-256"):
        load_student(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not installed")
def test_weights_outside_the_student_folder_are_refused(tmp_path):
    folder = tmp_path / "student"
    _write_student(folder, "resnet10t", {}, **ARGS)
    (tmp_path / "other.safetensors").write_bytes((folder / STUDENT_FILE).read_bytes())
    (folder / "link.safetensors").symlink_to(tmp_path / "other.safetensors")
    for weights in ("../other.safetensors", str(tmp_path / "other.safetensors"), "link.safetensors"):
        with pytest.raises(SpecError) as exc:
            load_student(folder, weights=weights)
        (line,) = exc.value.problems
        assert line == f"weights: {weights!r} is outside the student folder {folder}; only files inside it"


def test_a_student_folder_whose_kwargs_load_a_file_is_refused(tmp_path):
    _model, card = _write_student(tmp_path, "resnet10t", {}, **ARGS)
    card["ofasearch"]["kwargs"] = {"checkpoint_path": str(tmp_path / STUDENT_FILE)}
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(SpecError) as exc:
        load_student(tmp_path)
    (line,) = exc.value.problems
    assert line.startswith(f"{tmp_path / CARD_FILE}: ofasearch.kwargs.checkpoint_path: not allowed"), line


@pytest.mark.slow  # trains on real Fashion-MNIST: minutes on a busy CPU
def test_fashion_mnist_accuracy_through_the_loader_vs_raw_pixels(tmp_path, capsys):
    """A ResNet student trained by `ofasearch train` on real Fashion-MNIST, evaluated on the 10,000
    real test images: through `load_student`'s transform it scores what metrics.json says; fed
    raw [0, 1] pixels (the old README snippet) it collapses."""
    from ofasearch.cli import main

    config = {
        "name": "fmnist-loader",
        "data": {"dataset": "fashion-mnist", "train_subset": 4000, "val_size": 500},
        "pairs": [{"teacher": {"model": "resnet10t"}, "student": {"model": "resnet10t"}}],
        "distill": {"method": "none"},
        "optim": {"lr": 2e-3, "epochs": 2, "batch_size": 64, "warmup_epochs": 0},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["train", str(path), "-o", str(out), "--no-progress", "--cpus-per-worker", "2"]) == 0
    capsys.readouterr()

    model, transform = load_student(out)  # the README snippet
    test = load_splits(load_config(out / "config.yaml").data).test  # the run's own data settings
    with torch.no_grad():
        via_loader = float((model(transform(test.images)).argmax(-1) == test.labels).float().mean())
        raw = float((model(test.images.float() / 255.0).argmax(-1) == test.labels).float().mean())
    metrics = json.loads((out / "metrics.json").read_text())
    half = [1.96 * (a * (1 - a) / len(test)) ** 0.5 for a in (via_loader, raw)]  # 95 % binomial, one seed
    print(
        f"\nFashion-MNIST test ({len(test)} images, 1 seed): loader {via_loader:.4f} ±{half[0]:.4f}, "
        f"raw [0,1] {raw:.4f} ±{half[1]:.4f}"
    )
    assert len(test) == 10_000
    assert via_loader == pytest.approx(metrics["test_acc"], abs=1e-6), "the loader feeds what training fed"
    assert via_loader > 0.7, via_loader
    assert raw < via_loader - 0.2, (raw, via_loader)
