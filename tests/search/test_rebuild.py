"""``ofasearch rebuild``: the tables of a finished search recreated from Ray Tune's folders equal
what the recorder wrote (the kill/resume tests check the same after a resume: see tests/helpers/rebuilt.py)."""

from __future__ import annotations

import shutil
import uuid

import pyarrow.fs
import pytest

from ofasearch.cli import main
from ofasearch.errors import FileFault
from ofasearch.results.tables import EPOCHS_FILE, TRIALS_FILE, read_rows
from ofasearch.search.rebuild import rebuild_tables, tables_to_rebuild
from ofasearch.utils.storage import as_location
from tests.helpers.rebuilt import assert_rebuild_matches


def test_rebuilt_tables_equal_the_recorded_ones(digits_search, tmp_path):
    assert_rebuild_matches(digits_search, tmp_path)


def test_only_missing_or_damaged_tables_are_rebuilt_unless_forced(digits_search, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(digits_search, copy)
    assert tables_to_rebuild(copy) == ()
    assert main(["rebuild", str(copy)]) == 0
    assert "nothing to rebuild (--force rebuilds them)" in capsys.readouterr().out

    trials_before = (copy / TRIALS_FILE).read_bytes()
    (copy / EPOCHS_FILE).write_bytes((copy / EPOCHS_FILE).read_bytes()[:64])  # damaged
    assert tables_to_rebuild(copy) == (EPOCHS_FILE,)
    assert main(["rebuild", str(copy)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"rebuilt {EPOCHS_FILE} of {copy} from Ray Tune's folders search, baselines: ")
    assert (copy / TRIALS_FILE).read_bytes() == trials_before, "a readable table is left alone"
    assert read_rows(copy / EPOCHS_FILE) == read_rows(digits_search / EPOCHS_FILE)

    assert main(["rebuild", str(copy), "--force"]) == 0
    assert "rebuilt trials.parquet and epochs.parquet" in capsys.readouterr().out


def test_without_tunes_folders_nothing_can_be_rebuilt(digits_search, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(digits_search, copy)
    for name in ("search", "baselines", TRIALS_FILE):
        path = copy / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(FileFault) as caught:
        rebuild_tables(copy)
    assert caught.value.problems == [
        f"{copy}: no Ray Tune experiment folders (search/, baselines/, confirm/) to rebuild the tables from"
    ]
    assert main(["rebuild", str(copy)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {copy}: no Ray Tune experiment folders")


def test_a_folder_in_a_bucket_is_rebuilt_in_place(digits_search, s3_bucket, capsys):
    """The finished search copied to S3 (moto's server) without its tables: rebuild by URI puts
    back the tables the recorder wrote."""
    uri = f"{s3_bucket}/{uuid.uuid4().hex[:8]}/{digits_search.name}"
    folder = as_location(uri)
    pyarrow.fs.copy_files(str(digits_search), folder.fs_path, destination_filesystem=folder.fs)
    for name in (TRIALS_FILE, EPOCHS_FILE):
        (folder / name).unlink()
    assert main(["rebuild", uri]) == 0
    assert capsys.readouterr().out.startswith(f"rebuilt {TRIALS_FILE} and {EPOCHS_FILE} of {uri} from Ray Tune's")
    for name, key in ((TRIALS_FILE, "trial_id"), (EPOCHS_FILE, "epoch")):
        recorded = sorted(read_rows(digits_search / name), key=lambda r: (r["trial_id"], r[key]))
        assert sorted(read_rows(folder / name), key=lambda r: (r["trial_id"], r[key])) == recorded, name

    (folder / "search").fs.delete_dir((folder / "search").fs_path)
    (folder / "baselines").fs.delete_dir((folder / "baselines").fs_path)
    assert main(["rebuild", uri, "--force"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {uri}: no Ray Tune experiment folders")
    assert main(["rebuild", f"{s3_bucket}/nothing-here"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: {s3_bucket}/nothing-here: not an ofasearch results folder (no spec.yaml)"
    )
