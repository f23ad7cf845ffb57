"""Ranking of search trials, each pair's baselines, per-student latency, status counts."""

import pytest

from ofasearch.results.ranking import (
    best_trial,
    composition_of,
    pair_baseline,
    ranked_trials,
    status_counts,
    student_latency,
)


def test_ranking_keeps_full_budget_candidates_best_first_ties_to_the_faster(trial_rows):
    ranked = ranked_trials(trial_rows, 3)
    # stopped/diverged trials with higher accuracy and the failed trial are never ranked
    assert [r["trial_id"] for r in ranked] == [
        "mix_tie",
        "mix_best",
        "base_3",
        "base_2",
        "vit_done",
        "base_1",
        "base_0",
    ]
    search = ranked_trials(trial_rows, 3, roles=("search",))
    assert [r["trial_id"] for r in search] == ["mix_tie", "mix_best", "vit_done"]
    assert best_trial(trial_rows, 3)["trial_id"] == "mix_tie"
    assert best_trial(trial_rows, 4) is None
    assert ranked_trials([], 3) == []


def test_pair_baseline_is_the_completed_one_of_the_same_pair(trial_rows):
    vit = next(r for r in trial_rows if r["trial_id"] == "vit_done")
    assert pair_baseline(trial_rows, vit, "none")["trial_id"] == "base_0"
    assert pair_baseline(trial_rows, vit, "kd")["trial_id"] == "base_1"
    failed = [{**r, "status": "error"} if r["trial_id"] == "base_1" else r for r in trial_rows]
    assert pair_baseline(failed, vit, "kd") is None
    assert pair_baseline(trial_rows, {"teacher": "resnet10t", "student": "other"}, "none") is None


def test_latency_is_the_students_median_over_its_trials_on_one_device(trial_rows):
    rows = student_latency(trial_rows)
    assert [r["trial_id"] for r in rows] == [r["trial_id"] for r in trial_rows]
    medians: dict[str, set[float]] = {}
    for r in rows:
        medians.setdefault(r["student"].split("(")[0], set()).add(round(r["latency_ms_b1"], 6))
    # vit: 2.0, 2.4, 2.2, 2.2, 2.2; mixer: 0.5, 0.7, 0.6, 0.6 and one trial without a measurement
    assert medians == {"vit_tiny_patch16_224": {2.2}, "MlpMixer": {0.6}}
    other = [{**trial_rows[0], "device": "cuda"}, *trial_rows[1:]]
    assert student_latency(other)[0]["latency_ms_b1"] == 2.0, "another device is its own group"
    assert student_latency(other)[1]["latency_ms_b1"] == pytest.approx(2.2)


def test_status_counts(trial_rows):
    assert status_counts(trial_rows) == "7 completed, 1 diverged, 1 error, 1 stopped"
    assert status_counts([]) == "none"


def test_a_baseline_that_beats_every_searched_config_is_the_best_candidate(trial_rows):
    """What a search hands over is the best of everything trained, baselines included."""
    rows = [{**r, "val_acc": 0.9} if r["trial_id"] == "base_3" else r for r in trial_rows]
    assert best_trial(rows, 3)["trial_id"] == "base_3"
    assert best_trial(rows, 3, roles=("search",))["trial_id"] == "mix_tie"
    assert composition_of(best_trial(rows, 3)) == "kd"
    assert composition_of({**rows[0], "composition": "dist~ + ofa@3,4"}) == "dist~ + ofa@3,4"
