"""Reading results folders leniently: a folder written by another ofasearch (another timm, another
schema) still opens in ``status``, ``report`` and ``export``."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from ofasearch.cli import main
from ofasearch.config import parse_spec
from ofasearch.errors import SpecError
from ofasearch.results.folder import load_folder_spec, read_folder, read_folder_spec, read_state
from ofasearch.results.tables import TRIAL_COLUMNS, write_table
from tests.helpers.logcapture import log_lines
from tests.helpers.specs import SPEC

UNKNOWN = "mixer_from_another_timm"  # a model name today's timm does not know


def _spec_folder(tmp_path: Path, data: dict) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return tmp_path


def _other_version(spec: dict) -> dict:
    """``spec`` with the second student renamed to an unknown model and a key today's schema rejects."""
    data = copy.deepcopy(spec)
    data["pairs"][1]["student"]["model"] = UNKNOWN
    data["optim"]["lookahead"] = True
    return data


def test_an_unknown_model_name_is_not_checked(tmp_path):
    data = copy.deepcopy(SPEC)
    data["pairs"][1]["student"]["model"] = UNKNOWN
    with log_lines() as logged:
        spec = read_folder_spec(_spec_folder(tmp_path, data))
    assert logged == []
    assert spec.pairs[1].student.startswith(f"{UNKNOWN}(")
    assert spec.max_epochs == 3


def test_a_key_todays_schema_rejects_falls_back_to_the_raw_fields_with_one_warning(tmp_path):
    strict = read_folder_spec(_spec_folder(tmp_path / "strict", copy.deepcopy(SPEC)))
    with log_lines() as logged:
        lenient = read_folder_spec(_spec_folder(tmp_path / "other", _other_version(SPEC)))
    assert len(logged) == 1
    assert "read leniently" in logged[0]
    assert "optim.lookahead: unknown key" in logged[0]
    renamed = strict.pairs[1].student.replace("MlpMixer", UNKNOWN)
    assert [(p.teacher, p.student) for p in lenient.pairs] == [
        (strict.pairs[0].teacher, strict.pairs[0].student),
        (strict.pairs[1].teacher, renamed),
    ]
    assert lenient.pairs[0].student_kwargs == strict.pairs[0].student_kwargs
    assert (lenient.name, lenient.max_epochs, lenient.dataset, lenient.image_size, lenient.search) == (
        strict.name,
        strict.max_epochs,
        strict.dataset,
        strict.image_size,
        strict.search,
    )
    searched = ["distill.stages", "distill.temperature", "distill.eps", "optim.lr"]  # the schema's order
    assert list(lenient.searched) == list(strict.searched) == searched
    assert lenient.searched == strict.searched
    with pytest.raises(SpecError, match="optim.lookahead"):
        load_folder_spec(tmp_path / "other")  # resuming needs today's schema


def test_teachers_times_students_read_leniently(tmp_path):
    data = {k: v for k, v in _other_version(SPEC).items() if k != "pairs"}
    data["teachers"] = [SPEC["pairs"][0]["teacher"]]
    data["students"] = [SPEC["pairs"][0]["student"], {"model": UNKNOWN}]
    spec = read_folder_spec(_spec_folder(tmp_path, data))
    assert [p.student.split("(")[0] for p in spec.pairs] == ["vit_tiny_patch16_224", UNKNOWN]
    assert {p.teacher for p in spec.pairs} == {"resnet10t"}


def test_bad_folders_give_one_clear_line(tmp_path):
    with pytest.raises(SpecError) as exc:
        read_folder(tmp_path)
    assert exc.value.problems == [f"{tmp_path}: not an ofasearch results folder (no spec.yaml)"]
    (tmp_path / "spec.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SpecError) as exc:
        read_folder(tmp_path)
    assert len(exc.value.problems) == 1
    assert "invalid YAML" in exc.value.problems[0]
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(SpecError) as exc:
        read_state(tmp_path)
    assert len(exc.value.problems) == 1
    assert exc.value.problems[0].startswith(f"{tmp_path / 'state.json'}: invalid JSON")
    assert read_state(tmp_path / "nowhere") == {}


@pytest.mark.parametrize("damage", ["", '{"phase": "sea', "\x00\x00\x00"], ids=["empty", "truncated", "zeros"])
def test_a_damaged_state_falls_back_to_its_backup_with_one_warning(tmp_path, damage):
    (tmp_path / "state.json").write_text(damage)
    (tmp_path / "state.json.bak").write_text(json.dumps({"phase": "search", "stages": [[4]]}))
    with log_lines() as logs:
        assert read_state(tmp_path) == {"phase": "search", "stages": [[4]]}
    assert len(logs) == 1, logs
    assert logs[0].startswith(f"{tmp_path / 'state.json'}: "), logs
    assert "using state.json.bak" in logs[0]
    assert ("empty" in logs[0]) == (damage == "")
    (tmp_path / "state.json.bak").write_text("")
    with pytest.raises(SpecError) as exc:
        read_state(tmp_path)
    (line,) = exc.value.problems
    assert line.startswith(f"{tmp_path / 'state.json'}: ")
    assert line.endswith("no readable state.json.bak to fall back to")


def test_a_finished_search_from_another_version_opens_in_status_report_and_export(digits_search, tmp_path, capsys):
    folder = tmp_path / digits_search.name
    folder.mkdir()
    for name in ("state.json", "epochs.parquet"):
        shutil.copy2(digits_search / name, folder / name)
    spec = yaml.safe_load((digits_search / "spec.yaml").read_text())
    parse_spec(copy.deepcopy(spec), check_models=False)  # today's schema reads the original
    old_label = spec["pairs"][1]["student"]["model"]
    (folder / "spec.yaml").write_text(yaml.safe_dump(_other_version(spec), sort_keys=False))
    trials = pq.read_table(digits_search / "trials.parquet").to_pylist()
    for row in trials:  # the trials name the model as that version's timm knew it
        row["student"] = row["student"].replace(old_label, UNKNOWN)
        row["config"] = row["config"].replace(f"model: {old_label}", f"model: {UNKNOWN}")
    write_table(trials, TRIAL_COLUMNS, folder / "trials.parquet")
    phase = json.loads((folder / "state.json").read_text())["phase"]

    assert main(["status", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.count("read leniently") == 1
    assert f"{folder.resolve()}: phase {phase}" in out
    assert "best: " in out
    assert all(row["trial_id"] in out for row in trials)
    assert UNKNOWN in out

    assert main(["report", str(folder)]) == 0
    page = (folder / "report.html").read_text()
    assert "ofasearch report: digits-search" in page
    assert UNKNOWN in page
    assert page.count('<tr data-pair="') == 2, "the spec's two pairs, matched to the trials by label"
    assert page.count('data-plot="') >= 2
    assert (folder / "report" / "learning_curves.png").is_file()

    out_file = tmp_path / "rank1.yaml"
    assert main(["export", str(folder), "-o", str(out_file)]) == 0
    exported = yaml.safe_load(out_file.read_text())
    best = (digits_search / "best.yaml").read_text().splitlines()[0]
    assert exported["name"] == "digits-search-rank1"
    assert out_file.read_text().splitlines()[0].split()[6] in best
