"""Every bad input gets the same answer from `validate`, `run` and `train`: exit code 2 and one
`error:` line per problem naming the field, never a traceback, before anything is trained."""

import pytest
import yaml

from ofasearch.cli import main

MIXER = {"model": "MlpMixer", "kwargs": {"patch_size": 4, "num_blocks": 2, "embed_dim": 48}}
GOOD = {
    "data": {"dataset": "digits", "image_size": 16},
    "pairs": [{"teacher": {"model": "resnet10t"}, "student": MIXER}],
    "optim": {"epochs": 2},
}

CASES = {
    "typo'd student model": (
        {"pairs": [{"teacher": {"model": "resnet10t"}, "student": {"model": "deit_tiny_patch16_22"}}]},
        "pairs[0].student: unknown timm model 'deit_tiny_patch16_22'; close matches: deit_tiny_patch16_224",
    ),
    "stage beyond the student's depth": (
        {"distill": {"stages": [1, 4]}},
        "distill.stages: none of [[1, 4]] fits pairs[0].student MlpMixer",
    ),
    "typo'd key deep down": (
        {"pairs": [{"teacher": {"model": "resnet10t", "kwarg": {}}, "student": MIXER}]},
        "pairs[0].teacher.kwarg: unknown key; did you mean 'kwargs'?",
    ),
    "wrong type": ({"optim": {"epochs": "two"}}, "optim.epochs: 'two' is not"),
    "temperature <= 0": ({"distill": {"temperature": 0}}, "distill.temperature: 0.0 is not allowed; must be > 0"),
    "eps <= 0": ({"distill": {"eps": -1}}, "distill.eps: -1"),
    "missing checkpoint file": (
        {"pairs": [{"teacher": {"model": "resnet10t", "checkpoint": "/nope/t.safetensors"}, "student": MIXER}]},
        "pairs[0].teacher.checkpoint: '/nope/t.safetensors': no such file",
    ),
    "missing data root": (
        {"data": {"dataset": "cifar10", "root": "/nonexistent/cifar"}},
        "data.root: cifar10 not found in /nonexistent/cifar",
    ),
    "unknown dataset": ({"data": {"dataset": "cifar1000"}}, "data.dataset: 'cifar1000' is not allowed"),
    "empty pairs": ({"pairs": []}, "pairs: at least one teacher/student pair is needed"),
    "ConvNeXt teacher at 28 px": (
        {
            "data": {"dataset": "digits", "image_size": 28},
            "pairs": [{"teacher": {"model": "convnext_atto"}, "student": MIXER}],
        },
        "pairs[0].teacher: convnext_atto does not run at the data's image size, 28x28 px with 1 channel(s): "
        "Calculated padded input size",
    ),
    "eps list that does not fit the stages": (
        {"distill": {"eps": [1.1, 1.2, 1.3, 1.4]}},
        "distill.eps: [1.1, 1.2, 1.3, 1.4] has 4 values, but stage choice [3, 4] of pairs[0].student MlpMixer needs 3",
    ),
}


@pytest.mark.parametrize("command", ["validate", "run", "train"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line_everywhere(tmp_path, capsys, command, case):
    patch, expected = CASES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**GOOD, **patch, "storage": str(tmp_path / "results")}))
    args = [command, str(path)] + (["-o", str(tmp_path / "out")] if command == "train" else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert any(line.startswith(f"error: {expected}") for line in lines), err
    assert all(line.startswith("error: ") for line in lines) and "Traceback" not in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "out").exists(), "nothing started"


@pytest.mark.parametrize("command", ["validate", "run", "train"])
def test_broken_yaml_and_missing_file(tmp_path, capsys, command):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  dataset: digits\n pairs: [\n")
    assert main([command, str(bad)]) == 2
    assert "line 3, column 2: invalid YAML" in capsys.readouterr().err
    assert main([command, str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such file" in capsys.readouterr().err


def test_dry_run_refuses_a_taken_name_as_the_run_would(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**GOOD, "storage": str(tmp_path / "results")}))
    taken = tmp_path / "results" / "mine"
    taken.mkdir(parents=True)
    (taken / "spec.yaml").write_text("name: mine\n")
    assert main(["run", str(spec), "--dry-run", "--name", "mine"]) == 2
    assert f"error: name: {taken} already holds a search" in capsys.readouterr().err
    assert main(["run", str(spec), "--dry-run", "--name", "other"]) == 0, "a free name passes"
    assert main(["run", str(spec), "--dry-run"]) == 0, "without --name the run takes the next free name"
    assert not (tmp_path / "results" / "other").exists(), "a dry run creates nothing"
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert main(["run", str(spec), "--dry-run", "--storage", str(blocked / "results")]) == 2
    assert f"error: storage: cannot create {blocked / 'results'}" in capsys.readouterr().err
