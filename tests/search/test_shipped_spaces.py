"""The shipped search spaces validate and plan (data found, every model built, stages fit)."""

from pathlib import Path

import pytest

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
    assert len(space.pairs) == pairs and all(space.available_stages)
    assert space.spec.search.confirm is not None, "shipped specs confirm their winners over seeds"
    assert space.spec.searched_values(), "a search space searches something"


def test_validate_and_dry_run_build_every_pair(capsys, tmp_path):
    assert main(["validate", str(SPACES / "cnn_to_vit.yaml")]) == 0
    assert "valid; 1 pair(s)" in capsys.readouterr().out
    assert main(["run", str(SPACES / "cnn_to_vit.yaml"), "--dry-run", "--storage", str(tmp_path)]) == 0
    assert "dry run" in capsys.readouterr().out and not any(tmp_path.iterdir())


def test_paper_space_is_valid_without_its_data():
    spec = load_spec(SPACES / "cifar100_paper.yaml")
    stages = []
    for pair in spec.pairs:
        model = build_model(pair.student.model, pair.student.kwargs, num_classes=100, in_chans=3, image_size=32)
        stages.append(sorted(describe_model(model, (3, 32, 32)).stage_shapes))
        build_model(pair.teacher.model, pair.teacher.kwargs, num_classes=100, in_chans=3, image_size=32)
    space = SearchSpace(spec, stages)
    assert space.spec.optim.epochs == 300 and space.spec.resources.gpus_per_worker == 1
    assert trial_config(space, {**space.defaults(0), BASELINE_KEY: "kd"}).distill.method == "kd"
