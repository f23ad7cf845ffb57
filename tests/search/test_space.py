import optuna
import pytest

from ofasearch import SpecError
from ofasearch.config import parse_spec
from ofasearch.search.space import SearchSpace, decode, encode
from ofasearch.search.trial import BASELINE_KEY, trial_config

VIT = {"model": "vit_tiny_patch16_224", "kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 4, "num_heads": 1}}
SHALLOW = {"model": "vit_tiny_patch16_224", "kwargs": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 1}}
SPEC = {
    "data": {"dataset": "digits"},
    "pairs": [
        {"teacher": {"model": "resnet10t"}, "student": VIT},
        {"teacher": {"model": "resnet10t"}, "student": SHALLOW},
    ],
    "distill": {
        "stages": {"choices": [[1, 2, 3, 4], [3, 4], [4]]},
        "eps": {"low": 1.1, "high": 1.6},
        "temperature": {"low": 1.0, "high": 4.0},
        "ofa_weight": {"low": 0.1, "high": 1.0, "log": True},
    },
    "optim": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "batch_size": {"choices": [64, 128]}},
}
STAGES = [[1, 2, 3, 4], [3, 4]]  # what plan() measures for these two students


def space() -> SearchSpace:
    return SearchSpace(parse_spec(SPEC), STAGES)


def test_encode_decode_round_trip():
    for value in ([1, 2, 3, 4], [1.1, 1.2], 1.5, "adamw"):
        assert decode(encode(value)) == value


def test_define_by_run_names_stage_choices_per_student():
    s = space()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    seen_stage_values: dict[str, set] = {}
    for _ in range(30):
        trial = study.ask()
        s.define(trial)
        pair = trial.params["pair"]
        stage_keys = [k for k in trial.params if k.startswith("distill.stages")]
        assert len(stage_keys) == 1
        seen_stage_values.setdefault(stage_keys[0], set()).add(trial.params[stage_keys[0]])
        assert 1.1 <= trial.params["distill.eps"] <= 1.6
        config = s.config_for(trial.params)
        assert config.pair.label == pair
        assert config.distill.eps == trial.params["distill.eps"]
        assert isinstance(config.distill.stages, list)
        study.tell(trial, 0.5)
    by_student = {k.split("__")[1][:40]: v for k, v in seen_stage_values.items()}
    assert len(by_student) == 2
    shallow = next(v for k, v in seen_stage_values.items() if "depth_2" in k)
    assert shallow <= {"3,4", "4"}, "a 2-block student never gets stages 1 or 2"


def test_paper_defaults_are_clipped_into_ranges():
    s = space()
    point = s.defaults(0)
    assert point["distill.eps"] == 1.1  # paper eps 1 clipped to the range
    assert point["distill.temperature"] == 1.0
    assert point["distill.ofa_weight"] == 1.0
    assert point[s.param_name("distill.stages", 0)] == "1,2,3,4"
    assert s.defaults(1)[s.param_name("distill.stages", 1)] == "3,4"
    assert point["optim.lr"] == pytest.approx(1e-3)
    assert point["optim.batch_size"] == 64
    base = trial_config(s, {**s.defaults(1), BASELINE_KEY: "none"})  # what a baseline trial runs
    assert base.distill.method == "none"
    assert base.pair.student.kwargs["depth"] == 2


def test_enqueued_defaults_come_first_in_optuna():
    s = space()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    for i in range(2):
        study.enqueue_trial(s.defaults(i))
    for i in range(2):
        trial = study.ask()
        s.define(trial)
        assert trial.params == s.defaults(i)


def test_stage_choices_that_fit_no_student_are_rejected():
    spec = parse_spec({**SPEC, "distill": {"stages": {"choices": [[1, 2]]}}})
    with pytest.raises(SpecError, match=r"distill.stages: none of \[\[1, 2\]\] fits pairs\[1\].student"):
        SearchSpace(spec, STAGES)


def test_epochs_cannot_be_searched():
    with pytest.raises(SpecError, match="optim.epochs: cannot be searched"):
        parse_spec({**SPEC, "optim": {"epochs": {"choices": [3, 6]}}})


def test_baseline_points_run_each_chosen_method_per_pair_at_its_defaults():
    from ofasearch.search.grids import baseline_points

    chosen = SearchSpace(parse_spec({**SPEC, "search": {"baselines": ["dist", "none"]}}), STAGES)
    points = baseline_points(chosen)
    assert [(p.get("pair"), p[BASELINE_KEY]) for p in points] == [
        (pair, m) for pair in [p.label for p in chosen.pairs] for m in ("dist", "none")
    ]
    configs = [trial_config(chosen, p) for p in points]
    assert [c.distill.method for c in configs] == ["dist", "none", "dist", "none"]
    assert all(c.distill.stages == [] and not c.distill.has_branches for c in configs)
    # the authors' settings for a small-image dataset (DIST's code on CIFAR: tau 4, loss weight 2)
    assert [(c.distill.dist_temperature, c.distill.kd_weight) for c in configs[::2]] == [(4.0, 2.0)] * 2
    assert len(baseline_points(space())) == 2 * 4, "default: none, kd, dkd, dist for each pair"
    paper = SearchSpace(parse_spec({**SPEC, "search": {"baselines": ["dkd"], "baseline_preset": "ofa-paper"}}), STAGES)
    dkd = trial_config(paper, baseline_points(paper)[0]).distill
    assert (dkd.dkd_alpha, dkd.dkd_beta, dkd.dkd_temperature) == (1.0, 2.0, 1.0), "the OFA paper's own DKD runs"


def test_each_pair_starts_at_its_recipe_and_settings():
    """The paper's values are the enqueued first trial of each pair (and its baselines): a
    searched lr starts at the pair's recipe value, ofa_weight at the pair's own setting."""
    teacher = {"model": "resnet10t"}
    spec = parse_spec(
        {
            "data": {"dataset": "digits"},
            "pairs": [
                {"teacher": teacher, "student": {"model": "resnet18"}, "recipe": "paper-cnn"},
                {
                    "teacher": teacher,
                    "student": {"model": "mobilenetv2_100"},
                    "recipe": "paper-cnn",
                    "settings": {"distill.ofa_weight": 0.1},
                },
                {"teacher": teacher, "student": {"model": "deit_tiny_patch16_224"}, "recipe": "paper-vit"},
            ],
            "distill": {"ofa_weight": {"low": 0.05, "high": 1.0, "log": True}},
            "optim": {"lr": {"low": 1e-4, "high": 0.1, "log": True}},
        }
    )
    space = SearchSpace(spec, [[1, 2, 3, 4]] * 3)
    starts = [space.defaults(i) for i in range(3)]
    assert [p["optim.lr"] for p in starts] == [0.05, 0.05, 5e-4]
    assert [p["distill.ofa_weight"] for p in starts] == [1.0, 0.1, 1.0]
    vit = space.config_for(starts[2])
    assert (vit.optim.name, vit.optim.lr, vit.augment.mixup, vit.pair.settings) == ("adamw", 5e-4, 0.8, {})
    cnn = space.config_for({**starts[1], "optim.lr": 0.02})
    assert (cnn.optim.name, cnn.optim.lr, cnn.distill.ofa_weight, cnn.augment.mixup) == ("sgd", 0.02, 0.1, 0.0)


COMPOSED = {
    **SPEC,
    "distill": {
        "logit_loss": {"choices": ["ofa", "kd", "dkd", "dist"]},
        "stages": {"choices": [[], [3, 4], [1, 2, 3, 4]]},
        "branch_loss": {"choices": ["ofa", "dist"]},
        "logit_standardize": {"choices": [False, True]},
        "eps": {"low": 1.0, "high": 1.6},
        "temperature": {"low": 1.0, "high": 4.0},
        "kd_weight": {"low": 0.5, "high": 4.0, "log": True},
        "ofa_weight": {"low": 0.1, "high": 1.0, "log": True},
        "dkd_beta": {"low": 1.0, "high": 8.0},
        "dist_temperature": {"low": 1.0, "high": 4.0},
    },
    "search": {"baselines": ["none", "kd", "dkd", "dist"]},
}


def test_a_parameter_exists_only_where_the_drawn_composition_reads_it():
    s = SearchSpace(parse_spec(COMPOSED), STAGES)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    kinds = set()
    for _ in range(40):
        trial = study.ask()
        s.define(trial)
        params = {k.split("__")[0]: v for k, v in trial.params.items()}
        logit, stages = params["distill.logit_loss"], decode(params[next(k for k in params if "stages" in k)])
        assert ("distill.dkd_beta" in params) == (logit == "dkd")
        assert ("distill.branch_loss" in params) == bool(stages) == ("distill.ofa_weight" in params)
        branch = params.get("distill.branch_loss")
        assert ("distill.eps" in params) == ("ofa" in (logit, branch))
        assert ("distill.dist_temperature" in params) == ("dist" in (logit, branch))
        config = s.config_for(trial.params)
        assert s.params_of(config) == trial.params, "a config maps back to the point it came from"
        kinds.add(config.distill.composition.split(" ")[0])
        study.tell(trial, 0.5)
    assert {"ofa", "kd", "dkd", "dist"} <= {k.rstrip("~") for k in kinds}


def test_the_paper_defaults_are_the_first_point_and_baselines_are_points_or_say_why_not():
    from ofasearch.search.grids import baseline_points
    from ofasearch.search.space import NotInSpace

    s = SearchSpace(parse_spec(COMPOSED), STAGES)
    first = s.config_for(s.defaults(0)).distill
    assert first.composition == "ofa + ofa@1,2,3,4"
    assert first.eps == 1.0
    assert first.temperature == 1.0
    found = {}
    for point in baseline_points(s)[:4]:
        config = trial_config(s, point)
        try:
            found[config.distill.method] = s.params_of(config)
        except NotInSpace as exc:
            found[config.distill.method] = str(exc)
    assert found["dist"]["distill.logit_loss"] == "dist"
    assert found["dist"]["distill.kd_weight"] == 2.0
    assert found["dkd"]["distill.dkd_beta"] == 8.0
    assert found["kd"] == "distill.gt_weight is 0.1, the spec's is 1.0", "mdistiller's KD weighs CE by 0.1"
    assert found["none"] == "distill.method is 'none', the spec's is 'ofa'"


@pytest.mark.parametrize(
    ("distill", "message"),
    [
        (
            {"branch_loss": {"choices": ["ofa", "dkd"]}},
            "distill.branch_loss: 'dkd' is not allowed; allowed: ofa, kd, dist",
        ),
        ({"logit_loss": "mse"}, "distill.logit_loss: 'mse' is not allowed; allowed: ofa, kd, dkd, dist"),
        ({"method": "kd", "logit_loss": "dist"}, "distill.logit_loss: composes losses only with method ofa"),
    ],
)
def test_a_composition_the_schema_cannot_train_is_one_line_naming_the_field(distill, message):
    with pytest.raises(SpecError) as err:
        SearchSpace(parse_spec({**SPEC, "distill": distill}), STAGES)
    assert len(err.value.problems) == 1, err.value.problems
    assert err.value.problems[0].startswith(message), err.value.problems
