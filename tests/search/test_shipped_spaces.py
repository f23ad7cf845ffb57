"""The shipped search spaces validate and plan (data found, every model built, stages fit)."""

from pathlib import Path

import pytest
from PIL import Image

from ofasearch.cli import main
from ofasearch.config import load_spec
from ofasearch.models import build_model, describe_model
from ofasearch.search.plan import plan
from ofasearch.search.space import SearchSpace
from ofasearch.search.trial import BASELINE_KEY, trial_config

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


@pytest.mark.parametrize("name, pairs", [("cnn_to_vit", 1), ("vit_to_cnn", 2), ("cnn_to_mlp", 2)])
def test_fashion_spaces_plan(name, pairs):
    space = plan(load_spec(SPACES / f"{name}.yaml"))
    assert len(space.pairs) == pairs
    assert all(space.available_stages)
    assert space.spec.search.confirm is not None, "shipped specs confirm their winners over seeds"
    assert space.spec.searched_values(), "a search space searches something"


def test_validate_and_dry_run_build_every_pair(capsys, tmp_path):
    assert main(["validate", str(SPACES / "cnn_to_vit.yaml")]) == 0
    assert "valid; 1 pair(s)" in capsys.readouterr().out
    assert main(["run", str(SPACES / "cnn_to_vit.yaml"), "--dry-run", "--storage", str(tmp_path)]) == 0
    assert "dry run" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def _paper_space(name: str, classes: int) -> SearchSpace:
    """The spec with every student built at 224 px (stages measured) and every teacher built."""
    spec = load_spec(SPACES / name)
    stages = []
    for pair in spec.pairs:
        model = build_model(pair.student.model, pair.student.kwargs, num_classes=classes, in_chans=3, image_size=224)
        stages.append(sorted(describe_model(model, (3, 224, 224)).stage_shapes))
        build_model(pair.teacher.model, pair.teacher.kwargs, num_classes=classes, in_chans=3, image_size=224)
    return SearchSpace(spec, stages)


def test_cifar100_paper_space_holds_the_papers_setting():
    space = _paper_space("cifar100_paper.yaml", 100)
    spec = space.spec
    assert spec.data.image_size == 224, "224 px, scored on test as the paper"
    assert spec.data.paper_protocol, "224 px, scored on test as the paper"
    assert (spec.optim.epochs, spec.optim.batch_size, spec.augment.label_smoothing) == (300, 1024, 0.1)
    assert spec.augment.crop == "rrc"
    assert spec.augment.normalize == "dataset"
    students = [p.student.label for p in spec.pairs]
    assert students[:3] == ["resnet18", "resnet18", "mobilenetv2_100"]
    assert "resmlp_12_224" in students
    assert "swin_pico_patch4_window7_224(drop_path_rate=0.0)" in students, "the reference's Swin-P"
    configs = [trial_config(space, space.defaults(i)) for i in range(len(spec.pairs))]
    firsts = [(c.optim.name, c.optim.lr, c.distill.eps, c.distill.temperature, c.distill.ofa_weight) for c in configs]
    assert firsts[0] == firsts[1] == ("sgd", 0.1, 1.0, 1.0, 0.1), "ResNet-18: the authors' posted run first"
    assert (configs[0].optim.warmup_lr, configs[0].optim.weight_decay) == (1e-6, 2e-3)
    assert firsts[2] == ("sgd", 0.05, 1.0, 1.0, 0.1), "ofa weight 0.1 for MobileNetV2"
    assert configs[2].augment.eval_interpolation == "bicubic"
    assert all(f == ("adamw", 5e-4, 1.0, 1.0, 1.0) for f in firsts[3:])
    vit = configs[3]
    assert (vit.augment.mixup, vit.augment.cutmix, vit.augment.re_prob, vit.optim.ema_decay) == (0.8, 1.0, 0.25, 0.0)
    assert (vit.optim.min_lr, vit.augment.eval_crop_pct, configs[-1].augment.eval_crop_pct) == (1e-6, 0.9, 0.875)
    assert all(c.distill.stages == [1, 2, 3, 4] for c in configs)
    assert spec.optim.batch_size % spec.resources.workers_per_trial == 0, "global 1024 = 8 workers x 128"
    assert trial_config(space, {**space.defaults(0), BASELINE_KEY: "kd"}).distill.method == "kd"


def test_imagenet_paper_space_is_valid_without_its_data():
    space = _paper_space("imagenet_paper.yaml", 1000)
    assert space.spec.data.dataset == "imagefolder"
    assert space.spec.data.paper_protocol
    configs = [trial_config(space, space.defaults(i)) for i in range(len(space.pairs))]
    assert all(c.distill.eps == 1.5 and c.optim.name == "sgd" for c in configs), "the paper's ImageNet eps first"
    assert all(p.teacher.pretrained for p in space.pairs)
    optim = configs[0].optim
    assert (optim.epochs, optim.schedule, optim.decay_epochs, optim.lr, optim.step_on) == (
        100,
        "step",
        30,
        0.1,
        "epoch",
    )


def test_imagenet_paper_space_validates_on_an_image_folder(capsys, tmp_path):
    """`validate` builds and runs every model at 224 px on a tiny folder of 2 classes (no hub
    weights here: the teachers are random, which validate allows for a dry look)."""
    for split in ("train", "test"):
        for name in ("a", "b"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (300 + 40 * i, 240), (40 * i, 90, 200)).save(folder / f"{i}.png")
    args = ["--set", f"data.root={tmp_path}", "--set", "pairs[0].teacher.pretrained=false"]
    args += ["--set", "pairs[1].teacher.pretrained=false"]
    assert main(["validate", str(SPACES / "imagenet_paper.yaml"), *args]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "valid; 2 pair(s)" in out
    assert "train 4 (train/)" in out
    assert "val 4 (the test split (val_fraction 0: the paper's protocol))" in out
    assert "crop rrc: cut from each original image" in out
