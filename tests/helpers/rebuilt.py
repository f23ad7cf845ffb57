"""A check shared by the tests that finish a search: the tables rebuilt from Ray Tune's own
folders (``ofasearch rebuild``) equal, row by row and column by column, what the recorder wrote."""

from __future__ import annotations

import shutil
from pathlib import Path

from ofasearch.results.tables import EPOCHS_FILE, TRIALS_FILE, read_rows
from ofasearch.search.rebuild import rebuild_tables


def assert_rebuild_matches(folder: Path, scratch: Path, *, faulted: bool = False) -> None:
    """Rebuild a copy of ``folder`` without its tables (the folder itself is left alone) and
    compare with the recorded tables, including the columns' order. After a fault (``faulted``)
    Tune's record may end before grid trials the recorder saw end: the rebuild names them, and
    every other row must match."""
    copy = scratch / f"rebuilt-{folder.name}"
    shutil.copytree(folder, copy)
    for name in (TRIALS_FILE, EPOCHS_FILE):
        (copy / name).unlink()
    done = rebuild_tables(copy)
    assert done.written == (TRIALS_FILE, EPOCHS_FILE)
    lost = set(done.unrecovered)
    assert faulted or not lost, f"rows not rebuilt without a fault: {lost}"
    recorded_ids = {r["trial_id"] for r in read_rows(folder / TRIALS_FILE)}
    assert lost <= recorded_ids, "the rebuild names only trials the recorder has rows of"
    assert not lost & {r["trial_id"] for r in read_rows(copy / TRIALS_FILE)}, "a named trial has no rebuilt row"
    for name, key in ((TRIALS_FILE, ("trial_id",)), (EPOCHS_FILE, ("trial_id", "epoch"))):
        recorded = [r for r in read_rows(folder / name) if r["trial_id"] not in lost]
        recorded = sorted(recorded, key=lambda r: tuple(r[k] for k in key))
        rebuilt = sorted(read_rows(copy / name), key=lambda r: tuple(r[k] for k in key))
        assert [tuple(r[k] for k in key) for r in rebuilt] == [tuple(r[k] for k in key) for r in recorded], name
        for old, new in zip(recorded, rebuilt, strict=True):
            assert list(new) == list(old), f"{name}: the same columns in the same order"
            differ = {k: (old[k], new[k]) for k in old if old[k] != new[k]}
            assert not differ, f"{name} row {tuple(old[k] for k in key)}: recorded vs rebuilt {differ}"
    shutil.rmtree(copy)
