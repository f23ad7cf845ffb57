"""The searcher's replay benchmark: the shipped table covers its grid, and replaying the product's
own searcher and ASHA over it behaves as a search does (real Optuna, real Ray schedulers)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

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
    return {m.name: bench.run_method(table, m, 3, budget, {}) for m in bench.METHODS}


def _space_and_paths(bench, table):
    from ofasearch.search.space import SearchSpace

    return SearchSpace(table.spec, table.available_stages), list(table.spec.searched_values())


def test_shipped_table_covers_the_grid_with_full_curves(bench, table):
    from ofasearch.search.trial import trial_config

    space, paths = _space_and_paths(bench, table)
    keys = {bench.config_key(trial_config(space, p), paths) for p in bench.grid_points(space)}
    assert keys == set(table.curves)
    assert all(len(curve) == table.epochs and all(0 <= v <= 1 for v in curve) for curve in table.curves.values())
    meta = table.meta
    assert meta["record_seconds"] > 0 and "bench_search.py record" in meta["command"]
    assert {"torch", "timm", "optuna", "ray"} <= set(meta["software"])


def test_regret_is_never_negative_and_best_found_never_falls(summaries, table):
    for summary in summaries.values():
        assert len(summary.runs) == 3
        for run in summary.runs:
            bests = [best for _, best in run.curve]
            assert bests == sorted(bests)
            assert run.epochs <= summary.budget
            assert all(summary.regret_at(run, e) >= 0 for e in (1, summary.budget // 4, summary.budget))


def test_defaults_only_finds_exactly_the_defaults_best(bench, table, summaries):
    from ofasearch.search.trial import trial_config

    space, paths = _space_and_paths(bench, table)
    default_keys = [bench.config_key(trial_config(space, space.defaults(p)), paths) for p in range(len(space.pairs))]
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


def test_tpe_proposes_after_startup_and_differs_from_random(summaries, table):
    for run in summaries["TPE+ASHA (default)"].runs:
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
    assert stopped and all(t.epoch >= table.spec.search.grace_epochs for t in stopped)
    # same epochs, more configs looked at
    assert len(summaries["random+ASHA"].runs[0].trials) > table.spec.search.num_samples


def test_replay_is_deterministic(bench, table):
    method, budget = bench.METHODS[0], 48
    first, second = (bench.replay(table, method, 7, budget, {"max_concurrent": 3}) for _ in range(2))
    assert first.curve == second.curve
    assert [(t.key, t.epoch) for t in first.trials] == [(t.key, t.epoch) for t in second.trials]


def test_smoke_run_prints_the_table_and_the_target_check():
    result = subprocess.run([sys.executable, str(SCRIPT), "--smoke-test"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for method in ("TPE+ASHA (default)", "random+ASHA", "random+FIFO", "TPE+FIFO", "paper defaults only"):
        assert method in result.stdout
    assert "target (<= 1/3)" in result.stdout and "ratio" in result.stdout


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
    assert len({r["key"] for r in rows}) == 2 and len(rows) == 2 * 6
    assert sorted(r["epoch"] for r in rows) == sorted(list(range(1, 7)) * 2)
    meta = json.loads(data.schema.metadata[b"bench_search"])
    assert len(meta["session_seconds"]) == 2 and meta["record_seconds"] > 0
