"""The searcher with real Optuna: PRUNED for ASHA stops, TPE in effect after its random start,
and every trial labelled with how it was proposed."""

import copy
import pickle
import shutil
import statistics
from pathlib import Path

import pytest
from optuna.trial import TrialState

from ofasearch.config import parse_spec
from ofasearch.search.searcher import PROPOSED_BY, OptunaSearcher, default_startup_trials
from ofasearch.search.space import SearchSpace
from tests.helpers.specs import MIXER, SPEC, TEACHER


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


def _finish(searcher: OptunaSearcher, trial_id: str, epochs: int, max_epochs: int = 3) -> None:
    for epoch in range(1, epochs + 1):
        searcher.on_trial_result(trial_id, {"val_acc": 0.1 * epoch, "epoch": epoch})
    searcher.on_trial_complete(trial_id, {"val_acc": 0.1 * epochs, "epoch": epochs})


def test_the_study_lives_in_its_journal_file_and_survives_a_crash_after_the_last_save(tmp_path):
    """What Optuna's own tools see (load_study on the file), and a resume: Tune's saved state knows
    trials 0-2; trial 3 finished and trial 4 started after the save, then the driver died."""
    import optuna

    from ofasearch.search.searcher import STUDY_NAME, journal_storage

    spec = parse_spec(copy.deepcopy(SPEC))
    space = SearchSpace(spec, [[1, 2, 3, 4], [3, 4]])
    journal = tmp_path / "optuna.log"
    searcher = OptunaSearcher(space, seed=spec.seed, max_epochs=3, journal=journal)
    at_start = pickle.dumps(searcher)  # how Tune keeps the search algorithm in its experiment
    for trial_id, epochs in (("t0", 3), ("t1", 1)):
        searcher.suggest(trial_id)
        _finish(searcher, trial_id, epochs)
    searcher.suggest("t2")  # running at the save
    searcher.save(str(tmp_path / "searcher.pkl"))
    searcher.suggest("t3")
    _finish(searcher, "t3", 3)
    searcher.suggest("t4")  # never reaches Tune's saved state

    seen = optuna.load_study(study_name=STUDY_NAME, storage=journal_storage(journal))
    assert [t.state for t in seen.trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.RUNNING,
        TrialState.COMPLETE,
        TrialState.RUNNING,
    ]
    assert seen.trials[1].intermediate_values == {1: pytest.approx(0.1)}
    assert seen.trials[0].params == searcher.study.trials[0].params

    restored = pickle.loads(at_start)
    restored.restore(str(tmp_path / "searcher.pkl"))
    _finish(restored, "t2", 3)  # resumed by Tune
    _finish(restored, "t3", 3)  # re-run by Tune: the journal keeps its first result
    restored.suggest("t5")
    states = [t.state for t in optuna.load_study(study_name=STUDY_NAME, storage=journal_storage(journal)).trials]
    assert states[:5] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.FAIL,  # the orphan of the crash
    ]
    assert states[5] == TrialState.RUNNING
    assert len(states) == 6


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (make browser)")
def test_optuna_dashboard_opens_the_journal(tmp_path):
    """``optuna-dashboard <folder>/optuna.log`` on loopback: its API lists the study, and its page,
    rendered by headless Chromium, shows the study with its trials' history."""
    import json
    import subprocess
    import sys
    import time
    import urllib.request

    spec = parse_spec(copy.deepcopy(SPEC))
    journal = tmp_path / "optuna.log"
    searcher = OptunaSearcher(SearchSpace(spec, [[1, 2, 3, 4], [3, 4]]), seed=0, max_epochs=3, journal=journal)
    for i in range(4):
        searcher.suggest(str(i))
        _finish(searcher, str(i), 3 if i % 2 == 0 else 1)
    port = _free_port()
    dashboard = str(Path(sys.executable).parent / "optuna-dashboard")
    server = subprocess.Popen(
        [dashboard, str(journal), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as answer:
                    studies = json.load(answer)["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "optuna-dashboard did not answer within 60 s"
        assert [s["study_name"] for s in studies] == ["search"]
        cmd = [
            shutil.which("chromium") or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            "--virtual-time-budget=15000",
            f"http://127.0.0.1:{port}/dashboard/studies/{studies[0]['study_id']}",
        ]
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
        assert "search (id=0)" in dom, dom[:2000]
        assert "History" in dom, dom[:2000]
    finally:
        server.terminate()
        server.wait(timeout=30)
