from pathlib import Path

import pytest
import yaml

from ofasearch import SpecError, load_config, load_spec
from ofasearch.config import Choices, Range, parse_config, parse_spec

ROOT = Path(__file__).resolve().parents[2]
BASE = {
    "data": {"dataset": "digits"},
    "pairs": [{"teacher": {"model": "resnet10t"}, "student": {"model": "resnet10t"}}],
}


def problems(data, parse=parse_spec):
    with pytest.raises(SpecError) as info:
        parse(data)
    return info.value.problems


def test_shipped_configs_are_valid():
    config = load_config(ROOT / "search_spaces" / "train_cnn_to_vit.yaml")
    assert config.pair.teacher.checkpoint == "auto" and config.distill.method == "ofa"
    for path in (ROOT / "search_spaces").glob("*.yaml"):
        load_spec(path)


def test_distributions_are_parsed():
    spec = parse_spec(
        {
            **BASE,
            "distill": {"eps": {"low": 1.0, "high": 1.6}, "stages": {"choices": [[1, 2, 3, 4], [3, 4]]}},
            "optim": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "batch_size": {"choices": [64, 128]}},
        }
    )
    searched = spec.searched_values()
    assert isinstance(searched["distill.eps"], Range) and isinstance(searched["distill.stages"], Choices)
    assert searched["optim.lr"].log and set(searched) == {
        "distill.eps",
        "distill.stages",
        "optim.lr",
        "optim.batch_size",
    }


def test_teachers_times_students_is_a_product_with_auto_teachers():
    spec = parse_spec(
        {
            "data": {"dataset": "digits"},
            "teachers": [{"model": "resnet10t"}, {"model": "resnet18"}],
            "students": [{"model": "convnext_atto"}],
        }
    )
    assert [p.label for p in spec.pairs] == ["resnet10t -> convnext_atto", "resnet18 -> convnext_atto"]
    assert all(p.teacher.checkpoint == "auto" for p in spec.pairs)


def test_train_config_needs_constants_and_one_pair():
    lines = problems({**BASE, "distill": {"eps": {"low": 1.0, "high": 1.5}}}, parse_config)
    assert any(line.startswith("distill.eps: a train config needs a constant") for line in lines)
    lines = problems({**BASE, "pairs": BASE["pairs"] * 2}, parse_config)
    assert any("exactly one pair" in line for line in lines)


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"optim": {"epoch": 3}}, "optim.epoch: unknown key; did you mean 'epochs'?"),
        (
            {"data": {"dataset": "fashion-mnst"}},
            "data.dataset: 'fashion-mnst' is not allowed; did you mean 'fashion-mnist'?",
        ),
        ({"distill": {"eps": 0}}, "distill.eps: 0 is not allowed"),
        ({"distill": {"temperature": -1}}, "distill.temperature: -1.0 is not allowed; must be > 0"),
        ({"distill": {"eps": {"low": 1.6, "high": 1.0}}}, "distill.eps: low 1.6 > high 1"),
        ({"optim": {"lr": {"low": 0, "high": 0.1, "log": True}}}, "optim.lr: a log range needs low > 0"),
        ({"distill": {"stages": [0, 5]}}, "distill.stages: [0, 5] is not allowed"),
        (
            {"pairs": [{"teacher": {"model": "resnet81"}, "student": {"model": "resnet10t"}}]},
            "pairs[0].teacher: unknown timm model 'resnet81'; close matches: resnet18",
        ),
        ({"optim": {"batch_size": "big"}}, "optim.batch_size: 'big' is not a number"),
        ({"distill": {"method": "ofaa"}}, "distill.method: 'ofaa' is not allowed; allowed: ofa, kd, none"),
        ({"pairs": []}, "pairs: at least one teacher/student pair is needed"),
        ({"search": {"grace_epochs": 9}}, "search.grace_epochs: 9 is not allowed; must be <= optim.epochs (5)"),
        ({"search": {"reduction_factor": 1}}, "search.reduction_factor: Input should be greater than or equal to 2"),
        ({"search": {"num_samples": 0}}, "search.num_samples: Input should be greater than or equal to 1"),
        ({"optim": {"lr": -0.1}}, "optim.lr: -0.1 is not allowed; must be > 0"),
        ({"resources": {"workers_per_trial": 2, "backend": "local"}}, "resources: workers_per_trial: 2 needs backend"),
        ({"storage": "s3://bucket/x"}, "storage: 's3://bucket/x': object-store URIs are not supported yet"),
    ],
)
def test_bad_values_name_the_field(patch, expected):
    data = {**BASE, **patch}
    lines = problems(data)
    assert any(line.startswith(expected) for line in lines), lines


def test_broken_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  dataset: digits\n pairs: [\n")
    with pytest.raises(SpecError, match=r"line \d+, column \d+: invalid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "missing.yaml")


def test_relative_paths_are_resolved(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "storage": "results"}))
    monkeypatch.chdir(tmp_path)
    assert load_config(path).storage == str(tmp_path / "results")


def test_bare_on_off_from_yaml_mean_on_off():
    for text, expected in (("off", "off"), ("on", "on"), ("auto", "auto")):
        data = {**BASE, "distill": yaml.safe_load(f"teacher_cache: {text}")}
        assert parse_spec(data).distill.teacher_cache == expected
