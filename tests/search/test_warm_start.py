"""Warm start with real Optuna: a finished search's trials join the new study (same space), or its
best configs are enqueued where they fit (different space). The old search's folder is written by
hand with the product's own table writer, so the test is exact and needs no training."""

import copy
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from ofasearch import SpecError, load_spec
from ofasearch.config import parse_spec
from ofasearch.results.tables import EPOCH_COLUMNS, EPOCHS_FILE, TRIAL_COLUMNS, TRIALS_FILE, write_table
from ofasearch.search.plan import check_warm_start
from ofasearch.search.searcher import PROPOSED_BY, OptunaSearcher
from ofasearch.search.space import SearchSpace
from ofasearch.search.warm_start import same_space, warm_start
from tests.helpers.specs import SPEC

STAGES = [[1, 2, 3, 4], [3, 4]]  # what plan() measures for SPEC's two students


def _row(space, trial_id, pair, status, epochs, val_acc, stages, eps, temperature, lr):
    params = {"distill.stages": stages, "distill.eps": eps, "distill.temperature": temperature, "optim.lr": lr}
    config = space.config_for(
        {"pair": space.pairs[pair].label, **{space.param_name(k, pair): v for k, v in params.items()}}
    )
    return {
        "trial_id": trial_id,
        "role": "search",
        "status": status,
        "teacher": space.pairs[pair].teacher.label,
        "student": space.pairs[pair].student.label,
        "method": "ofa",
        "val_acc": val_acc,
        "val_acc_last": val_acc,
        "epochs": epochs,
        "seconds": 1.0,
        "seed": 0,
        "config": config.to_yaml(),
        **params,
    }


@pytest.fixture
def old_search(tmp_path) -> Path:
    """A finished search of SPEC: a full-budget trial per pair, one ASHA stop, one error."""
    spec = parse_spec(copy.deepcopy(SPEC))
    space = SearchSpace(spec, STAGES)
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "spec.yaml").write_text(spec.to_yaml())
    rows = [
        _row(space, "a", 0, "completed", 3, 0.80, "1,2,3,4", 1.40, 2.0, 3e-3),
        _row(space, "b", 1, "completed", 3, 0.70, "3,4", 1.10, 1.5, 2e-3),
        _row(space, "c", 0, "stopped", 1, 0.30, "4", 1.20, 1.0, 1.5e-3),
        {**_row(space, "d", 1, "error", 0, 0.0, "4", 1.3, 1.0, 1e-3), "val_acc": None, "val_acc_last": None},
    ]
    write_table(rows, TRIAL_COLUMNS, folder / TRIALS_FILE)
    epochs = [
        {"trial_id": t, "role": "search", "epoch": e, "val_acc": acc}
        for t, curve in (("a", [0.5, 0.7, 0.8]), ("b", [0.4, 0.6, 0.7]), ("c", [0.3]))
        for e, acc in enumerate(curve, 1)
    ]
    write_table(epochs, EPOCH_COLUMNS, folder / EPOCHS_FILE)
    return folder


def _searcher(data):
    spec = parse_spec(data)
    space = SearchSpace(spec, STAGES)
    return OptunaSearcher(space, seed=0, max_epochs=spec.optim.epochs, num_samples=8), space


def test_same_space_adds_the_finished_trials_so_tpe_models_them(old_search):
    searcher, space = _searcher(copy.deepcopy(SPEC))
    result = warm_start(searcher, space, old_search)
    assert result.same_space
    assert result.added == {"COMPLETE": 2, "PRUNED": 1}
    trials = searcher.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert sorted(t.value or 0.0 for t in trials) == [0.0, pytest.approx(0.7), pytest.approx(0.8)]
    pruned = next(t for t in trials if t.state is TrialState.PRUNED)
    assert pruned.intermediate_values == {1: pytest.approx(0.3)}
    assert pruned.params["distill.eps"] == 1.2
    best = searcher.study.best_trial
    assert best.params == {
        "pair": space.pairs[0].label,
        "distill.stages__" + space.param_name("distill.stages", 0).split("__")[1]: "1,2,3,4",
        "distill.eps": 1.4,
        "distill.temperature": 2.0,
        "optim.lr": 3e-3,
    }
    # the paper defaults still run first; the new study then asks TPE with the old trials in it
    proposed = [searcher.suggest(str(i))[PROPOSED_BY] for i in range(4)]
    assert proposed[:2] == ["default", "default"]
    assert len(searcher.study.trials) == 3 + 4


def test_different_space_enqueues_the_best_configs_that_fit_and_says_what_it_skipped(old_search, caplog):
    data = copy.deepcopy(SPEC)
    data["distill"]["eps"] = {"low": 1.0, "high": 1.3}  # trial a's eps 1.4 no longer fits
    searcher, space = _searcher(data)
    assert not same_space(parse_spec(copy.deepcopy(SPEC)), space.spec)
    with caplog.at_level("INFO", logger="ofasearch.search.warm_start"):
        result = warm_start(searcher, space, old_search)
    assert not result.same_space
    assert result.enqueued == 1
    assert result.skipped == ["a (distill.eps 1.4 is outside [1, 1.3])"]
    (line,) = [r.getMessage() for r in caplog.records if r.name == "ofasearch.search.warm_start"]
    assert "different space): enqueued 1 of its best configs; skipped a (distill.eps 1.4 is outside" in line
    configs = [searcher.suggest(str(i)) for i in range(3)]
    assert [c[PROPOSED_BY] for c in configs] == ["default", "default", "warm-start"]
    assert configs[2]["distill.eps"] == 1.1
    assert configs[2]["pair"] == space.pairs[1].label
    assert len(searcher.study.get_trials(states=(TrialState.COMPLETE,))) == 0, "nothing added as finished"


def test_warm_start_must_name_a_search_folder(tmp_path, old_search, monkeypatch):
    spec = parse_spec({**copy.deepcopy(SPEC), "search": {"warm_start": str(tmp_path / "nope")}})
    with pytest.raises(SpecError, match=r"search.warm_start: .*nope' is not an ofasearch search folder"):
        check_warm_start(spec)
    check_warm_start(parse_spec({**copy.deepcopy(SPEC), "search": {"warm_start": str(old_search)}}))
    relative = yaml.safe_dump({**copy.deepcopy(SPEC), "search": {"warm_start": "old"}})
    (tmp_path / "spec.yaml").write_text(relative)
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the working directory, as storage does
    assert load_spec("spec.yaml").search.warm_start == str(old_search)
