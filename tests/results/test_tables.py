"""The Parquet tables: written whole and atomically, read back as rows, damage reported in one line."""

import pytest

from ofasearch.errors import FileFault
from ofasearch.results.tables import EPOCH_COLUMNS, TRIAL_COLUMNS, read_rows, write_table


def test_rows_round_trip_with_the_fixed_columns_first(tmp_path, trial_rows):
    path = tmp_path / "trials.parquet"
    write_table(trial_rows, TRIAL_COLUMNS, path)
    rows = read_rows(path)
    assert [r["trial_id"] for r in rows] == [r["trial_id"] for r in trial_rows]
    assert list(rows[0])[: len(TRIAL_COLUMNS)] == TRIAL_COLUMNS
    assert list(rows[0])[len(TRIAL_COLUMNS) :] == ["distill.eps", "distill.stages", "optim.lr"]
    assert rows[4]["distill.stages"] == "3,4"
    assert rows[0]["distill.eps"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["trials.parquet"], "no temporary file is left behind"


def test_an_empty_table_still_has_its_columns_and_a_missing_one_has_no_rows(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "epochs.parquet"
    write_table([], EPOCH_COLUMNS, path)
    assert pq.read_table(path).column_names == EPOCH_COLUMNS
    assert read_rows(path) == []
    assert read_rows(tmp_path / "missing.parquet") == []


def test_a_damaged_table_is_one_line_that_says_how_to_rebuild_it(tmp_path, trial_rows):
    path = tmp_path / "trials.parquet"
    write_table(trial_rows, TRIAL_COLUMNS, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FileFault) as exc:  # a fault of a file (exit 1), not bad input
        read_rows(path)
    (line,) = exc.value.problems
    assert line.startswith(f"{path}: unreadable Parquet table (")
    assert line.endswith(f"rebuild it from Ray Tune's own folders with: ofasearch rebuild {tmp_path}")
