"""`ofasearch export`: any top config of a finished search as a train config, within limits."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ofasearch.cli import main
from ofasearch.config import load_config
from ofasearch.results.ranking import ranked_trials, student_latency
from ofasearch.utils.files import file_digest


@pytest.fixture(scope="module")
def ranked(digits_search):
    return ranked_trials(student_latency(pq.read_table(digits_search / "trials.parquet").to_pylist()), 3)


def test_rank_one_is_best_yaml_and_loads_as_a_train_config(digits_search, ranked, tmp_path, capsys):
    out = tmp_path / "best.yaml"
    assert main(["export", str(digits_search), "-o", str(out)]) == 0
    assert ranked[0]["trial_id"] in capsys.readouterr().out
    exported, best = load_config(str(out)), load_config(str(digits_search / "best.yaml"))
    assert exported.name == "digits-search-rank1"
    assert exported.model_dump(exclude={"name"}) == best.model_dump(exclude={"name"})


def test_rank_two_is_the_second_best(digits_search, ranked, tmp_path):
    assert len(ranked) >= 2
    out = tmp_path / "second.yaml"
    assert main(["export", str(digits_search), "--rank", "2", "-o", str(out)]) == 0
    assert f" {ranked[1]['trial_id']} (" in out.read_text().splitlines()[0]
    assert load_config(str(out)).distill.eps == pytest.approx(ranked[1]["distill.eps"])


def test_most_accurate_within_a_latency_and_a_size_limit(digits_search, ranked, tmp_path):
    slowest = max(r["latency_ms_b1"] for r in ranked)
    fastest = min(r["latency_ms_b1"] for r in ranked)
    limit = (slowest + fastest) / 2 if slowest > fastest else slowest
    within = [r for r in ranked if r["latency_ms_b1"] <= limit]
    out = tmp_path / "fast.yaml"
    assert main(["export", str(digits_search), "--max-latency-ms", str(limit), "-o", str(out)]) == 0
    assert f" {within[0]['trial_id']} (" in out.read_text().splitlines()[0]
    smallest = min(r["params"] for r in ranked)
    out = tmp_path / "small.yaml"
    assert main(["export", str(digits_search), "--max-params", str(smallest), "-o", str(out)]) == 0
    chosen = [r for r in ranked if r["params"] <= smallest][0]
    assert f" {chosen['trial_id']} (" in out.read_text().splitlines()[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rank", "0"], "--rank: 0 is not allowed; must be >= 1"),
        (["--rank", "99"], "--rank: 99 is not allowed; the search has"),
        (["--max-params", "1"], "within --max-params 1"),
        (["--max-latency-ms", "-3"], "--max-latency-ms: -3 is not allowed; must be > 0"),
    ],
)
def test_bad_export_requests_exit_2_with_one_line(digits_search, tmp_path, capsys, args, message):
    assert main(["export", str(digits_search), *args, "-o", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.yaml").exists()


def test_export_of_a_folder_that_is_no_search(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    assert "not an ofasearch results folder" in capsys.readouterr().err


def test_export_pins_the_teacher_by_content_and_the_folder_records_versions(digits_search, tmp_path):
    """The exported config names the teacher file the search trained and its SHA-256 instead of
    `checkpoint: auto`; state.json records the versions that ran the search."""
    out = tmp_path / "pinned.yaml"
    assert main(["export", str(digits_search), "-o", str(out)]) == 0
    teacher = load_config(str(out)).pair.teacher
    assert teacher.checkpoint not in (None, "auto")
    assert Path(teacher.checkpoint).is_file()
    assert teacher.sha256 == file_digest(teacher.checkpoint)
    assert load_config(str(digits_search / "best.yaml")).pair.teacher.sha256 == teacher.sha256
    state = json.loads((digits_search / "state.json").read_text())
    assert set(state["versions"]) == {"ofasearch", "torch", "timm", "ray", "optuna"}
    assert state["versions"]["ray"]
