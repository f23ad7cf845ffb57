"""Fault logs: the full traceback is readable by its user only, in a folder only that user can
enter (a shared temp dir is readable by all)."""

from __future__ import annotations

import os
import stat
import tempfile

import pytest

from ofasearch.utils.faults import write_fault_log


def _fault() -> Exception:
    try:
        raise OSError(28, "No space left on device", "/data/x")
    except OSError as exc:
        return exc


@pytest.fixture
def tmpdir_here(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_log_in_the_temp_dir_is_0600_in_a_0700_folder(tmpdir_here):
    log = write_fault_log(_fault(), ["run", "spec.yaml"])
    assert log is not None
    assert log.parent == tmpdir_here / f"ofasearch-{os.getuid()}"
    assert "Traceback" in log.read_text()
    assert "No space left" in log.read_text()
    assert _mode(log) == 0o600
    assert _mode(log.parent) == 0o700


def test_a_log_in_the_results_folder_is_0600(tmpdir_here):
    folder = tmpdir_here / "results"
    folder.mkdir()
    log = write_fault_log(_fault(), ["resume", str(folder)], folder)
    assert log is not None
    assert log.parent == folder
    assert _mode(log) == 0o600


def test_a_planted_log_folder_gets_no_log(tmpdir_here):
    """Another user made the folder first, open to all: the traceback is not written there."""
    planted = tmpdir_here / f"ofasearch-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    assert write_fault_log(_fault(), ["run", "spec.yaml"]) is None
    assert list(planted.iterdir()) == []
