"""The confirmation phase: the best configs and the baselines trained again on further seeds, a
ranking by the mean over seeds, and a kill in the middle of it resumed like any other phase."""

import json
import signal
import time

import pytest
import ray
import yaml

from ofasearch.results.ranking import ranked_trials
from ofasearch.results.seeds import seed_runs
from ofasearch.search.run import resume_search
from tests.helpers.background import start_search, table_rows, wait_for
from tests.helpers.specs import MIXER, SPEC, TEACHER

pytestmark = pytest.mark.slow

TOP_K, SEEDS, EPOCHS = 2, 3, 2
ENDED = ("completed", "stopped", "diverged", "error")


def _phase(folder):
    path = folder / "state.json"
    return json.loads(path.read_text()).get("phase") if path.exists() else None


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory):
    """A one-pair digits search with confirmation, SIGKILLed once a confirmation run has ended,
    then resumed to the end. One baseline (the student alone): every baseline is confirmed, and one
    shows that as well as two, at three fewer trials."""
    tmp = tmp_path_factory.mktemp("confirm")
    spec = {
        **SPEC,
        "name": "confirm",
        "pairs": [{"teacher": TEACHER, "student": MIXER}],
        "optim": {**SPEC["optim"], "epochs": EPOCHS},
        "search": {
            **SPEC["search"],
            "num_samples": 4,
            "baselines": ["none"],
            "confirm": {"top_k": TOP_K, "seeds": SEEDS},
        },
        "storage": str(tmp / "results"),
    }
    driver, folder = start_search(tmp, spec)

    def confirm_ended():
        return sum(r["role"] == "confirm" and r["status"] in ENDED for r in table_rows(folder))

    wait_for(driver, lambda: _phase(folder) == "confirm" and confirm_ended() >= 1, "a confirmation run ended", 600)
    killed_at = confirm_ended()
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(2)
    try:
        resume_search(folder, verbose=0)
    finally:
        ray.shutdown()
    return folder, killed_at


def test_confirmation_reruns_the_top_configs_and_baselines_on_new_seeds(confirmed):
    folder, killed_at = confirmed
    assert killed_at >= 1
    assert _phase(folder) == "done"
    rows = table_rows(folder)
    confirm = [r for r in rows if r["role"] == "confirm"]
    baselines = [r for r in rows if r["role"] == "baseline"]
    full = [r for r in rows if r["role"] == "search" and r["status"] == "completed"]
    confirmed_ids = {r["confirms"] for r in confirm}
    assert len(confirmed_ids & {r["trial_id"] for r in full}) == min(TOP_K, len(full))
    assert {b["trial_id"] for b in baselines} <= confirmed_ids, "every baseline is confirmed too"
    assert len(confirm) == len(confirmed_ids) * (SEEDS - 1), "each confirmation run once, after the kill too"
    for trial_id in confirmed_ids:
        seeds = sorted(r["seed"] for r in confirm if r["confirms"] == trial_id)
        assert seeds == [SPEC["seed"] + k for k in range(1, SEEDS)]
    assert all(r["status"] == "completed" and r["epochs"] == EPOCHS for r in confirm)
    for r in confirm:  # same config as the run it confirms, but for the seed
        original = next(o for o in rows if o["trial_id"] == r["confirms"])
        assert yaml.safe_load(r["config"]) == {**yaml.safe_load(original["config"]), "seed": r["seed"]}


def test_ranking_and_best_yaml_use_the_mean_over_seeds(confirmed):
    folder, _ = confirmed
    rows = table_rows(folder)
    searched = ranked_trials(rows, EPOCHS, roles=("search",))
    top = [r for r in searched if r["seeds"] == SEEDS]
    assert len(top) == min(TOP_K, len(searched)), "confirmed configs rank first"
    assert searched[: len(top)] == top, "confirmed configs rank first"
    # the candidates best.yaml is chosen from: the confirmed search configs and baselines, by their means
    ranked = ranked_trials(rows, EPOCHS)
    confirmed = [r for r in ranked if r["seeds"] == SEEDS]
    assert {r["role"] for r in confirmed} == {"search", "baseline"}
    assert ranked[: len(confirmed)] == confirmed
    for r in confirmed:
        runs = seed_runs(rows, r)
        assert r["val_acc_mean"] == pytest.approx(sum(runs.accuracies.values()) / SEEDS)
    assert [r["val_acc_mean"] for r in confirmed] == sorted((r["val_acc_mean"] for r in confirmed), reverse=True)
    assert ranked[0]["trial_id"] in (folder / "best.yaml").read_text().splitlines()[0]
