"""Files a crash or a power loss never leaves half-written, and the private folder in the shared
temp dir that another user cannot plant."""

from __future__ import annotations

import errno
import os
import stat
import tempfile

import pytest

from ofasearch.errors import FileFault
from ofasearch.utils.files import atomic_write, private_dir, user_temp_dir


def test_atomic_write_leaves_the_content_and_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "state.json"
    atomic_write(path, '{"phase": "search"}')
    atomic_write(path, '{"phase": "done"}')
    assert path.read_text() == '{"phase": "done"}'
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["b.bin", "state.json"]


def _fail_fsync_of(kind: str, err: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk refuses to flush a file (``kind`` "file") or a folder ("dir") with ``err``."""
    real = os.fsync

    def fsync(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        if is_dir == (kind == "dir"):
            raise OSError(err, os.strerror(err))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_file_the_disk_cannot_flush_never_replaces_the_old_one(tmp_path, monkeypatch):
    """The flush comes before the rename: when the disk fails it (full, I/O error), readers keep
    the previous version and no temporary file stays behind."""
    path = tmp_path / "state.json"
    atomic_write(path, "old")
    _fail_fsync_of("file", errno.EIO, monkeypatch)
    with pytest.raises(OSError) as exc:
        atomic_write(path, "new")
    assert exc.value.errno == errno.EIO
    assert exc.value.filename == str(path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_folder_its_file_system_cannot_fsync_still_gets_the_file(tmp_path, monkeypatch):
    _fail_fsync_of("dir", errno.EINVAL, monkeypatch)  # some network and FUSE file systems
    atomic_write(tmp_path / "a.txt", "text")
    assert (tmp_path / "a.txt").read_text() == "text"


def test_the_private_folder_is_made_0700(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = user_temp_dir()
    assert folder == tmp_path / f"ofasearch-{os.getuid()}"
    assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700
    assert user_temp_dir() == folder, "an existing private folder is accepted"


def _refused(folder) -> str:
    with pytest.raises(FileFault) as exc:
        private_dir(folder)
    assert len(exc.value.problems) == 1
    line = exc.value.problems[0]
    assert line.startswith(f"{folder}: ")
    assert "\n" not in line
    return line


def test_a_planted_folder_open_to_others_is_refused(tmp_path):
    folder = tmp_path / "planted"
    folder.mkdir()
    folder.chmod(0o777)
    assert "mode 0777, open to other users (must be 0700)" in _refused(folder)


def test_a_symlinked_folder_is_refused_and_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(target)
    assert "a symbolic link, not a folder" in _refused(tmp_path / "link")
    (tmp_path / "file").write_text("")
    assert "not a folder" in _refused(tmp_path / "file")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_of_another_user_is_refused(tmp_path):
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    assert f"owned by uid 65534, not by this user (uid {os.getuid()})" in _refused(folder)
