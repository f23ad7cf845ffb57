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
    assert all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in err
    assert not (tmp_path / "results").exists(), "nothing started"
    assert not (tmp_path / "out").exists(), "nothing started"


@pytest.mark.parametrize("command", ["validate", "run", "train"])
def test_broken_yaml_and_missing_file(tmp_path, capsys, command):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  dataset: digits\n pairs: [\n")
    assert main([command, str(bad)]) == 2
    assert "line 3, column 2: invalid YAML" in capsys.readouterr().err
    assert main([command, str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such file" in capsys.readouterr().err


CONSTRAINT_CASES = {
    "unknown key": ({"max_param": 10}, "search.constraints.max_param: unknown key; did you mean 'max_params'?"),
    "zero": ({"max_params": 0}, "search.constraints.max_params: Input should be greater than 0 (got 0)"),
    "negative": ({"max_latency_ms": -1}, "search.constraints.max_latency_ms: Input should be greater than 0"),
    "no student left": ({"max_flops": 1}, "search.constraints: no student meets {max_flops: 1} (MlpMixer("),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", sorted(CONSTRAINT_CASES))
def test_bad_constraints_are_one_line_before_anything_trains(tmp_path, capsys, command, case):
    constraints, expected = CONSTRAINT_CASES[case]
    path = tmp_path / "bad.yaml"
    spec = {**GOOD, "search": {"constraints": constraints}, "storage": str(tmp_path / "results")}
    path.write_text(yaml.safe_dump(spec))
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: {expected}"), err
    assert not (tmp_path / "results").exists(), "nothing started"


def test_validate_shows_each_students_measurements(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "search": {"constraints": {"max_params": 10**6}}}))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr()
    (line,) = [x for x in (out.out + out.err).splitlines() if x.startswith("student MlpMixer(")]
    assert "params 40,746, flops " in line
    assert "latency_ms_b1 " in line
    assert "meets search.constraints" in line


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


def test_version_names_ofasearch_and_its_stack(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"ofasearch {metadata.version('ofasearch')} (python ")
    for name in ("torch", "timm", "ray", "optuna"):
        assert f"{name} {metadata.version(name)}" in line


def test_every_command_and_argument_has_help():
    import argparse

    from ofasearch.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [a.dest for a in parser._actions if not a.help]
    for name, command in sub.choices.items():
        assert any(c.dest == name and c.help for c in sub._choices_actions), f"{name} has no help"
        missing += [f"{name} {a.dest}" for a in command._actions if not a.help]
    assert missing == []


def test_set_overrides_values_of_the_file_and_names_a_bad_key(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "storage": str(tmp_path / "results")}))
    assert main(["validate", str(path), "--set", "distill.eps={low: 1.0, high: 1.5}", "--set", "optim.lr=0.004"]) == 0
    assert "1 searched value(s)" in capsys.readouterr().out, "--set gave eps a range; the file has none"
    from ofasearch.config import load_spec

    spec = load_spec(path, overrides=["optim.lr=0.004", "pairs[0].student.kwargs.num_blocks=3", "data.augment=off"])
    assert spec.optim.lr == 0.004
    assert spec.pairs[0].student.kwargs["num_blocks"] == 3
    assert spec.data.augment is False
    assert main(["run", str(path), "--dry-run", "--set", "optim.lrr=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    from ofasearch.config.schema import OptimSpec

    allowed = ", ".join(sorted(OptimSpec.model_fields))
    assert err == f"error: --set optim.lrr: unknown key 'lrr' in optim; did you mean 'lr'? (allowed: {allowed})"
    out = tmp_path / "out"
    assert main(["train", str(path), "-o", str(out), "--set", "search.num_samples=3"]) == 2, "train has no search"
    assert capsys.readouterr().err.startswith("error: --set search.num_samples: unknown key 'search'")
    assert main(["train", str(path), "-o", str(out), "--set", "optim.lr"]) == 2
    assert "error: --set optim.lr: expected key=value" in capsys.readouterr().err
    assert main(["validate", str(path), "--set", "optim.lr=-1"]) == 2, "the value is checked as in the file"
    assert "error: optim.lr: -1.0 is not allowed; must be > 0" in capsys.readouterr().err
    assert not out.exists()
    assert not (tmp_path / "results").exists()


def test_models_with_a_class_name_says_how_to_use_the_class(capsys):
    assert main(["models", "MlpMixer"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no registered timm model name matches 'MlpMixer': MlpMixer is a timm model class: ")
    assert "`model: MlpMixer`" in err
    assert "mixer_s16_224" in err
    assert "mixnet" not in err
