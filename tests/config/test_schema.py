from pathlib import Path

import pytest
import yaml

from ofasearch import SpecError, load_config, load_spec
from ofasearch.config import Choices, Range, parse_config, parse_spec
from ofasearch.config.registry import RECIPES

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
    assert config.pair.teacher.checkpoint == "auto"
    assert config.distill.method == "ofa"
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
    assert isinstance(searched["distill.eps"], Range)
    assert isinstance(searched["distill.stages"], Choices)
    assert searched["optim.lr"].log
    assert set(searched) == {
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
        ({"distill": {"method": "ofaa"}}, "distill.method: 'ofaa' is not allowed; allowed: ofa, kd, dkd, dist, none"),
        ({"pairs": []}, "pairs: at least one teacher/student pair is needed"),
        ({"search": {"grace_epochs": 9}}, "search.grace_epochs: 9 is not allowed; must be <= optim.epochs (5)"),
        ({"search": {"reduction_factor": 1}}, "search.reduction_factor: Input should be greater than or equal to 2"),
        ({"search": {"num_samples": 0}}, "search.num_samples: Input should be greater than or equal to 1"),
        ({"optim": {"lr": -0.1}}, "optim.lr: -0.1 is not allowed; must be > 0"),
        ({"resources": {"workers_per_trial": 2, "backend": "local"}}, "resources: workers_per_trial: 2 needs backend"),
        (
            {"storage": "ftp://host/x"},
            "storage: 'ftp://host/x': unknown URI scheme 'ftp'; allowed: a path, file://, s3://",
        ),
        (
            {"optim": {"epochs": {"choices": [3, 6]}}},
            "optim.epochs: cannot be searched: it is the full budget (ASHA's max_t)",
        ),
        ({"optim": {"epochs": 2.5}}, "optim.epochs: 2.5 is not an integer"),
        ({"distill": {"eps": {"choices": [1.2, 0]}}}, "distill.eps: 0 is not allowed"),
        ({"optim": {"batch_size": {"low": 16.5, "high": 64}}}, "optim.batch_size: 16.5 is not an integer"),
        (
            {"optim": {"batch_size": {"choices": [64, 0]}}},
            "optim.batch_size: 0 is not allowed; must be an integer >= 1",
        ),
        ({"optim": {"lr": {"low": -1e-3, "high": 1e-2}}}, "optim.lr: -0.001 is not allowed; must be > 0"),
        ({"distill": {"stages": {"low": 1, "high": 4}}}, "distill.stages: a range is not allowed here"),
        ({"pairs": None, "teachers": [{"model": "resnet10t"}]}, "teachers and students must both be non-empty lists"),
        ({"teachers": [{"model": "resnet10t"}], "students": [{"model": "resnet10t"}]}, "give either pairs or"),
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
    teacher = {"model": "resnet10t", "checkpoint": "weights/t.safetensors"}
    pairs = [{"teacher": teacher, "student": {"model": "resnet10t"}}]
    data = {**BASE, "data": {"dataset": "digits", "root": "data"}, "pairs": pairs, "storage": "results"}
    path.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    spec, config = load_spec(path), load_config(path)
    assert spec.storage == str(tmp_path / "results")
    for doc in (spec, config):
        assert doc.data.root == str(tmp_path / "data")
        assert doc.pairs[0].teacher.checkpoint == str(tmp_path / "weights" / "t.safetensors")


def test_bare_on_off_from_yaml_mean_on_off():
    for text, expected in (("off", "off"), ("on", "on"), ("auto", "auto")):
        data = {**BASE, "distill": yaml.safe_load(f"teacher_cache: {text}")}
        assert parse_spec(data).distill.teacher_cache == expected


def test_teachers_times_students_errors_point_at_the_entry_written():
    lines = problems(
        {
            "data": {"dataset": "digits"},
            "teachers": [{"model": "resnet10t"}, {"model": "resnet81"}],
            "students": [{"model": "resnet10t", "kwarg": {}}, {"model": "convnext_atto"}],
        }
    )
    assert lines == [
        "students[0].kwarg: unknown key; did you mean 'kwargs'? "
        "(allowed: checkpoint, kwargs, model, pretrained, recipe, sha256)",
        lines[1],
    ]
    assert lines[1].startswith("teachers[1]: unknown timm model 'resnet81'"), lines


@pytest.mark.parametrize("parse", [parse_spec, parse_config])
def test_pairs_are_always_a_non_empty_list(parse):
    product = {"data": BASE["data"], "teachers": [{"model": "resnet10t"}], "students": [{"model": "resnet10t"}]}
    for data in (BASE, product):
        doc = parse(data)
        assert isinstance(doc.pairs, list)
        assert len(doc.pairs) == 1
        assert "teachers" not in type(doc).model_fields
        assert "students" not in type(doc).model_fields
        assert "teachers" not in doc.to_yaml()
        assert "students" not in doc.to_yaml()
    for data in ({"data": BASE["data"]}, {**BASE, "pairs": None}, {**BASE, "pairs": []}):
        assert problems(data, parse) == ["pairs: at least one teacher/student pair is needed"]


def test_train_config_values_have_concrete_types():
    config = parse_config(
        {
            **BASE,
            "distill": {"temperature": 2, "eps": [1, 1.5], "stages": "3,4", "gt_weight": 0},
            "optim": {"epochs": 3.0, "batch_size": 64, "lr": 1, "warmup_epochs": 0},
        }
    )
    d, o = config.distill, config.optim
    assert isinstance(o.epochs, int)
    assert o.epochs == 3
    assert isinstance(o.batch_size, int)
    assert isinstance(o.warmup_epochs, int)
    assert all(isinstance(v, float) for v in (d.temperature, d.gt_weight, d.kd_weight, o.lr, o.momentum, o.clip_grad))
    assert d.eps == [1.0, 1.5]
    assert all(isinstance(e, float) for e in d.eps)
    assert d.stages == [3, 4]
    assert isinstance(d.method, str)
    assert isinstance(o.name, str)
    assert isinstance(parse_config({**BASE, "distill": {"eps": 1}}).distill.eps, float)
    defaults = parse_config(BASE)
    assert isinstance(defaults.distill.temperature, float)
    assert isinstance(defaults.optim.epochs, int)


def test_search_spec_fields_are_constants_or_distributions():
    spec = parse_spec(
        {
            **BASE,
            "distill": {"temperature": 2, "eps": {"choices": [1, [1.1, 1.2]]}},
            "optim": {"lr": {"low": 1e-4, "high": 1e-2}},
        }
    )
    assert spec.distill.temperature == 2.0
    assert isinstance(spec.distill.temperature, float)
    assert isinstance(spec.distill.eps, Choices)
    assert isinstance(spec.optim.lr, Range)
    assert isinstance(spec.optim.epochs, int)
    assert set(spec.searched_values()) == {"distill.eps", "optim.lr"}
    assert parse_spec(yaml.safe_load(spec.to_yaml())) == spec, "to_yaml round-trips without exclusions"


def test_old_train_configs_with_search_and_storage_still_load(tmp_path):
    # as best.yaml, `ofasearch export` and the trials table's config column were written before
    old = {**BASE, "search": {"num_samples": 8, "grace_epochs": 1}, "storage": "/some/where/ofasearch_results"}
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(old))
    config = load_config(path)
    assert config == parse_config(BASE)
    assert set(yaml.safe_load(config.to_yaml())) == {
        *("name", "seed", "recipe", "data", "pairs", "distill", "optim", "augment", "resources")
    }
    assert not hasattr(config, "search")
    assert not hasattr(config, "storage")


def test_global_batch_must_split_over_the_workers():
    """optim.batch_size is the global batch: every worker takes an equal share of it."""
    ddp = {**BASE, "resources": {"workers_per_trial": 4}}
    assert parse_spec({**ddp, "optim": {"batch_size": 128}}).optim.batch_size == 128
    (line,) = problems({**ddp, "optim": {"batch_size": 130}})
    assert line.startswith("optim.batch_size: 130 is not divisible by the 4 workers")
    assert "multiple of 4" in line
    (line,) = problems({**ddp, "optim": {"batch_size": {"choices": [64, 96, 90]}}})
    assert "90 is not divisible" in line
    (line,) = problems({**ddp, "optim": {"batch_size": {"low": 64, "high": 256}}})
    assert "a range cannot be split over 4 workers" in line
    (line,) = problems({**ddp, "optim": {"batch_size": 30}}, parse_config)
    assert "30 is not divisible by the 4 workers" in line


def test_search_baselines_are_a_list_of_methods_default_all_four():
    def baselines(value):
        data = {**BASE, "search": {"baselines": value}} if value is not None else BASE
        return parse_spec(data).search.baselines

    assert baselines(None) == ["none", "kd", "dkd", "dist"]
    assert baselines(True) == ["none", "kd", "dkd", "dist"], "the boolean of earlier specs still works"
    assert baselines(False) == []
    assert baselines([]) == []
    assert baselines(["dist", "kd"]) == ["dist", "kd"]
    assert problems({**BASE, "search": {"baselines": ["kd", "kd"]}}) == ["search.baselines: kd given twice"]
    (line,) = problems({**BASE, "search": {"baselines": ["ofa"]}})
    assert line.startswith("search.baselines[0]: 'ofa' is not allowed")
    assert "'dkd'" in line


def test_recipes_fill_what_the_config_does_not_give():
    """A recipe is data: every value it sets can be given, which wins, or searched."""
    config = parse_config({**BASE, "recipe": "paper-vit", "optim": {"lr": 1e-3}})
    assert config.optim.lr == 1e-3, "the config's own value wins over its recipe"
    assert (config.optim.name, config.optim.warmup_epochs, config.optim.warmup_lr) == ("adamw", 20, 5e-7)
    a = config.augment
    assert (a.crop, a.auto_augment, a.mixup, a.cutmix, a.re_prob, a.label_smoothing) == (
        "rrc",
        "rand-m9-mstd0.5-inc1",
        0.8,
        1.0,
        0.25,
        0.1,
    )
    assert (config.optim.epochs, config.optim.batch_size) == (300, 1024)
    again = parse_config(yaml.safe_load(config.to_yaml()))
    assert again == config, "a resolved config reads back the same"
    cnn = parse_config({**BASE, "recipe": "paper-cnn"})
    assert (cnn.optim.name, cnn.optim.lr, cnn.optim.weight_decay, cnn.optim.min_lr, cnn.optim.clip_grad) == (
        "sgd",
        0.05,
        2e-3,
        1e-3,
        0.0,
    )
    assert not cnn.augment.mixes
    assert cnn.augment.label_smoothing == 0.1
    default = parse_config(BASE)
    assert default.optim == parse_config({**BASE, "recipe": "default"}).optim
    assert (default.augment.crop, default.augment.label_smoothing, default.optim.ema_decay) == ("pad", 0.0, 0.0)


def test_pair_recipes_differ_and_shared_values_move_to_the_spec():
    pairs = [
        {"teacher": {"model": "resnet10t"}, "student": {"model": "resnet18"}, "recipe": "paper-cnn"},
        {
            "teacher": {"model": "resnet10t"},
            "student": {"model": "deit_tiny_patch16_224"},
            "recipe": "paper-vit",
            "settings": {"distill.ofa_weight": 0.1},
        },
    ]
    spec = parse_spec({**BASE, "pairs": pairs, "distill": {"ofa_weight": {"low": 0.05, "high": 1.0, "log": True}}})
    assert (spec.optim.epochs, spec.optim.batch_size, spec.augment.crop) == (300, 1024, "rrc"), "shared: hoisted"
    assert spec.pairs[0].settings["optim.name"] == "sgd"
    assert spec.pairs[1].settings["optim.name"] == "adamw"
    assert spec.pairs[1].settings["distill.ofa_weight"] == 0.1, "a searched value's pair setting stays on the pair"
    assert parse_spec(yaml.safe_load(spec.to_yaml())) == spec
    (line,) = problems({**BASE, "pairs": [{**pairs[0], "settings": {"optim.epochs": 10}}, pairs[1]]})
    assert line.startswith("optim.epochs: the pairs' recipes or settings give different budgets [10, 300]")
    assert parse_spec({**BASE, "pairs": pairs, "optim": {"epochs": 10}}).optim.epochs == 10


def test_bad_recipes_and_settings_are_one_line_each():
    assert problems({**BASE, "recipe": "paper"}) == [
        "recipe: recipe 'paper' is not allowed (allowed: default, paper-cnn, paper-vit, paper-imagenet-cnn, "
        "paper-imagenet-vit)"
    ]
    pair = {**BASE["pairs"][0], "settings": {"optim.lrate": 0.1}}
    (line,) = problems({**BASE, "pairs": [pair]})
    assert line.startswith("optim.lrate: unknown key (allowed: amp, batch_size")
    (line,) = problems({**BASE, "augment": {"auto_augment": "rand-m9"}}, parse_config)
    assert line == "augment: auto_augment need crop: rrc (timm's create_transform pipeline)"
    (line,) = problems({**BASE, "augment": {"crop": "rrc", "auto_augment": "fancy"}}, parse_config)
    assert line.startswith("augment.auto_augment: 'fancy' is not allowed; a timm auto_augment string")


def test_every_recipe_value_is_a_valid_setting():
    for name, recipe in RECIPES.items():
        sections: dict = {}
        for path, value in recipe.items():
            section, key = path.split(".", 1)
            sections.setdefault(section, {})[key] = value
        config, named = parse_config({**BASE, **sections}), parse_config({**BASE, "recipe": name})
        assert (config.optim, config.augment) == (named.optim, named.augment), name


def test_a_fraction_of_a_gpu_packs_trials_and_reaches_rays_accounting():
    """gpus_per_worker 0.25: four trials share one GPU; Tune's trial resources and Ray Train's
    per-worker resources carry the fraction as given. 1.5 GPUs is no count Ray accepts."""
    from ofasearch.cluster.trainer import per_worker_resources
    from ofasearch.search.trial import trial_resources

    base = {
        "data": {"dataset": "digits"},
        "pairs": [{"teacher": {"model": "resnet10t"}, "student": {"model": "resnet10t"}}],
    }
    spec = parse_spec({**base, "resources": {"gpus_per_worker": 0.25}})
    assert spec.resources.gpus_per_worker == 0.25
    assert trial_resources(spec.resources) == {"cpu": 1.0, "gpu": 0.25}
    assert per_worker_resources(2, 1.0, 0.25, driver_cpus=0.0) == {"CPU": 1.0, "GPU": 0.25}
    assert parse_spec({**base, "resources": {"gpus_per_worker": 2}}).resources.gpus_per_worker == 2
    with pytest.raises(SpecError) as err:
        parse_spec({**base, "resources": {"gpus_per_worker": 1.5}})
    assert "resources.gpus_per_worker" in str(err.value)
    assert "fraction" in str(err.value)


@pytest.mark.parametrize("bad", ["max", -1, True, "0.5x"])
def test_gpus_per_worker_is_auto_or_a_count_and_anything_else_is_one_line(bad):
    base = {
        "data": {"dataset": "digits"},
        "pairs": [{"teacher": {"model": "resnet10t"}, "student": {"model": "resnet10t"}}],
    }
    spec = parse_spec({**base, "resources": {"gpus_per_worker": "auto"}})
    assert spec.resources.gpus_per_worker == "auto"
    with pytest.raises(ValueError, match="auto must be resolved"):
        spec.resources.gpus()
    assert parse_spec({**base, "resources": {"gpus_per_worker": "0.5"}}).resources.gpus() == 0.5
    with pytest.raises(SpecError) as err:
        parse_spec({**base, "resources": {"gpus_per_worker": bad}})
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("resources.gpus_per_worker: ")
    assert f"{bad!r} is not allowed; allowed: auto, 0 (the CPU), a fraction of one GPU" in err.value.problems[0]
