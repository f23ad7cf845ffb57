"""The searcher with real Optuna: PRUNED for ASHA stops, TPE in effect after its random start,
and every trial labelled with how it was proposed."""

import copy
import statistics

import pytest
from optuna.trial import TrialState

from ofasearch.config import parse_spec
from ofasearch.search.searcher import PROPOSED_BY, OptunaSearcher, default_startup_trials
from ofasearch.search.space import SearchSpace
from tests.specs import MIXER, SPEC, TEACHER


def test_optuna_is_told_pruned_for_asha_stopped_trials():
    spec = parse_spec(copy.deepcopy(SPEC))
    searcher = OptunaSearcher(SearchSpace(spec, [[1, 2, 3, 4], [3, 4]]), seed=spec.seed, max_epochs=3)
    for trial_id, epochs in (("stopped", 1), ("full", 3)):
        searcher.suggest(trial_id)
        for epoch in range(1, epochs + 1):
            result = {"val_acc": 0.1 * epoch, "epoch": epoch, "training_iteration": epoch}
            searcher.on_trial_result(trial_id, result)
        searcher.on_trial_complete(trial_id, result)
    states = [t.state for t in searcher.study.trials]
    assert states == [TrialState.PRUNED, TrialState.COMPLETE]
    assert searcher.study.trials[0].intermediate_values == {1: pytest.approx(0.1)}
    assert searcher.study.best_value == pytest.approx(0.3)


def _run(searcher: str, startup: int, n: int = 16) -> list[tuple[str, float]]:
    """``n`` sequential trials on a one-pair space whose score falls with eps: (proposer, eps)."""
    data = {
        **copy.deepcopy(SPEC),
        "pairs": [{"teacher": TEACHER, "student": MIXER}],
        "distill": {"eps": {"low": 1.0, "high": 2.0}, "temperature": {"low": 1.0, "high": 3.0}},
        "search": {"num_samples": n, "searcher": searcher, "startup_trials": startup},
    }
    spec = parse_spec(data)
    opt = OptunaSearcher(
        SearchSpace(spec, [[3, 4]]), seed=3, max_epochs=3, searcher=searcher, startup_trials=startup, num_samples=n
    )
    out = []
    for i in range(n):
        config = opt.suggest(str(i))
        eps = config["distill.eps"]
        opt.on_trial_complete(str(i), {"val_acc": 2.0 - eps, "epoch": 3})
        out.append((config[PROPOSED_BY], eps))
    return out


def test_after_the_random_start_tpe_proposes_and_learns():
    tpe = _run("tpe", startup=3, n=30)
    assert [p for p, _ in tpe] == ["default"] + ["startup"] * 3 + ["tpe"] * 26
    random = _run("random", startup=3, n=30)
    assert [p for p, _ in random] == ["default"] + ["random"] * 29
    assert [e for _, e in tpe[:4]] == [e for _, e in random[:4]], "same seed: same defaults and random start"
    tpe_eps = [e for p, e in tpe if p == "tpe"]
    random_eps = [e for _, e in random[4:]]
    # the score falls with eps: TPE moves towards eps = 1, random search stays spread over [1, 2]
    assert statistics.fmean(tpe_eps) < statistics.fmean(random_eps) - 0.1, (tpe_eps, random_eps)
    assert statistics.median(tpe_eps[-8:]) < 1.15 < statistics.median(random_eps[-8:]), (tpe_eps, random_eps)


def test_default_startup_scales_with_the_budget():
    assert [default_startup_trials(n, 2) for n in (2, 3, 4, 8, 12, 50)] == [0, 0, 1, 2, 2, 2]
    spec = parse_spec({**copy.deepcopy(SPEC), "search": {**SPEC["search"], "num_samples": 12}})
    assert OptunaSearcher(SearchSpace(spec, [[1, 2, 3, 4], [3, 4]]), seed=0, max_epochs=3, num_samples=12).startup == 2
