"""The searcher's replay benchmark: the shipped table covers its composition grid and every
baseline, and replaying the product's own searcher and ASHA over it behaves as a search does (real
Optuna, real Ray schedulers, the baselines told to the study as a search tells them)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from optuna.trial import TrialState

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_search.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_search", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_search"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table(bench):
    return bench.load_table()


@pytest.fixture(scope="module")
def summaries(bench, table):
    budget = table.spec.search.num_samples * table.epochs
    methods = [*bench.METHODS, bench.NOT_TOLD]
    return {m.name: bench.run_method(table, m, 3, budget, {}) for m in methods}


def _space(table):
    from ofasearch.search.space import SearchSpace

    return SearchSpace(table.spec, table.available_stages)


def test_shipped_table_covers_the_grid_and_every_baseline_with_full_curves(bench, table):
    space = _space(table)
    points = bench.recording_points(space)
    assert {key for key, role, _ in points if role == bench.GRID} == set(table.curves)
    assert {key for key, role, _ in points if role == bench.BASELINE} == set(table.baselines)
    assert {json.loads(k)["baseline"] for k in table.baselines} == {"none", "kd", "dkd", "dist"}
    for curve in [*table.curves.values(), *table.baselines.values()]:
        assert len(curve) == table.epochs
        assert all(0 <= v <= 1 for v in curve)
    meta = table.meta
    assert meta["record_seconds"] > 0
    assert "bench_search.py record" in meta["command"]
    assert {"torch", "timm", "optuna", "ray"} <= set(meta["software"])


def test_the_grid_is_the_composition_space_and_dkd_dist_baselines_are_its_points(bench, table):
    from ofasearch.config import parse_config
    from ofasearch.search.space import NotInSpace

    space = _space(table)
    compositions = {parse_config(yaml.safe_load(table.configs[k])).distill.composition for k in table.curves}
    assert {"ofa", "kd", "dkd", "dist", "dkd~", "ofa + ofa@3,4", "dist + dist@1,2,3,4"} <= compositions
    for key in table.baselines:
        method = json.loads(key)["baseline"]
        config = parse_config(yaml.safe_load(table.configs[key]))
        if method in ("dkd", "dist"):  # the grid's constants were chosen for this
            assert bench.point_key(space.params_of(config)) in table.curves
        else:
            with pytest.raises(NotInSpace):
                space.params_of(config)


def test_regret_is_never_negative_and_best_found_never_falls(summaries):
    for summary in summaries.values():
        assert len(summary.runs) == 3
        assert (summary.regret >= 0).all()
        for run in summary.runs:
            bests = [best for _, best in run.curve]
            assert bests == sorted(bests)
            assert run.epochs <= summary.budget


def test_defaults_only_finds_exactly_the_defaults_best(bench, table, summaries):
    space = _space(table)
    default_keys = [bench.point_key(space.defaults(p)) for p in range(len(space.pairs))]
    expected = max(max(table.curves[k]) for k in default_keys)
    for run in summaries["paper defaults only"].runs:
        assert [t.key for t in run.trials] == default_keys
        assert {t.proposed_by for t in run.trials} == {"default"}
        assert run.best_by(run.epochs) == expected
    # FIFO runs the defaults to the full budget first, so it can only do better than them
    for name in ("random+FIFO", "TPE+FIFO"):
        for run in summaries[name].runs:
            assert [t.key for t in run.trials[: len(default_keys)]] == default_keys
            assert run.best_by(run.epochs) >= expected


def test_told_baselines_are_tpes_start_and_never_count_as_found(bench, table, summaries):
    # the dkd and dist baselines of both pairs are points of the space: TPE models them from its
    # first proposal (they count among its start-up trials); none and kd are not points
    for name, told in (("TPE+ASHA (default)", 4), (bench.NOT_TOLD.name, 0)):
        run = bench.replay(table, summaries[name].method, 0, 48, {})
        phases = [t.proposed_by for t in run.trials]
        assert phases[:2] == ["default", "default"]
        assert ("startup" in phases) == (told == 0)
    space = _space(table)
    searcher_spec = bench.replay_spec(table, bench.METHODS[0], 0, {})
    from ofasearch.search.searcher import build_searcher
    from ofasearch.search.warm_start import tell_baselines

    searcher = build_searcher(searcher_spec, space)
    skipped = tell_baselines(searcher, space, table.baseline_rows())
    complete = searcher.study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.user_attrs["baseline"] for t in complete) == ["dist", "dist", "dkd", "dkd"]
    assert len(skipped) == 4
    assert all(s.startswith(("none", "kd")) for s in skipped)
    for run in summaries["TPE+ASHA (default)"].runs:  # regret counts only the search's own trials
        assert not any(t.proposed_by == "baseline" for t in run.trials)
        assert all(t.key in table.curves for t in run.trials)


def test_tpe_proposes_after_startup_and_differs_from_random(summaries):
    for run in summaries["TPE+ASHA, baselines not told"].runs:  # without them: Optuna's random start first
        phases = [t.proposed_by for t in run.trials]
        assert phases[:2] == ["default", "default"]
        assert phases == sorted(phases, key=["default", "startup", "tpe"].index)  # never back to random
        assert phases.count("tpe") > phases.count("startup")
    tpe, random = summaries["TPE+FIFO"].runs, summaries["random+FIFO"].runs
    assert any([t.key for t in a.trials] != [t.key for t in b.trials] for a, b in zip(tpe, random, strict=True))


def test_asha_stops_trials_and_fifo_runs_every_trial_to_the_budget(summaries, table):
    for run in summaries["random+FIFO"].runs:
        assert len(run.trials) == table.spec.search.num_samples
        assert all(t.epoch == table.epochs for t in run.trials)
    stopped = [t for run in summaries["TPE+ASHA (default)"].runs for t in run.trials if t.epoch < table.epochs]
    assert stopped
    assert all(t.epoch >= table.spec.search.grace_epochs for t in stopped)
    # same epochs, more configs looked at
    assert len(summaries["random+ASHA"].runs[0].trials) > table.spec.search.num_samples


def test_replay_is_deterministic(bench, table):
    method, budget = bench.METHODS[0], 48
    first, second = (bench.replay(table, method, 7, budget, {"max_concurrent": 3}) for _ in range(2))
    assert first.curve == second.curve
    assert [(t.key, t.epoch) for t in first.trials] == [(t.key, t.epoch) for t in second.trials]


def test_smoke_run_prints_every_table():
    result = subprocess.run([sys.executable, str(SCRIPT), "--smoke-test"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for method in ("TPE+ASHA (default)", "random+ASHA", "random+FIFO", "TPE+FIFO", "paper defaults only"):
        assert method in result.stdout
    assert "target (<= 1/3)" in result.stdout
    assert "ratio" in result.stdout
    assert "TPE+ASHA vs random+FIFO" in result.stdout
    assert "epochs to match" in result.stdout
    assert "baselines told to the study first or not" in result.stdout
    assert "ASHA rung metric" in result.stdout
    assert "mean2" in result.stdout


@pytest.mark.slow
def test_recording_resumes_where_it_stopped(tmp_path):
    table, cache = tmp_path / "table.parquet", tmp_path / "cache"
    command = [sys.executable, str(SCRIPT), "record", "--table", str(table), "--cache", str(cache), "--limit", "1"]
    for _ in range(2):
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "1 recorded" in result.stdout  # the second session skipped the first config
    data = pq.read_table(table)
    rows = data.to_pylist()
    assert len({r["key"] for r in rows}) == 2
    assert len(rows) == 2 * 6
    assert sorted(r["epoch"] for r in rows) == sorted(list(range(1, 7)) * 2)
    meta = json.loads(data.schema.metadata[b"bench_search"])
    assert len(meta["session_seconds"]) == 2
    assert meta["record_seconds"] > 0
