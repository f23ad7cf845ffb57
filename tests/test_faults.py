"""Runtime faults through the real CLI on real files: one ``error:`` line naming the path and the
remedy (the traceback in a log file), a finished run never overwritten by surprise, an edited
spec never resumed silently, and concurrent searches of one name in distinct folders.

Every fault here is caught before Ray would start, so no test starts Ray.
"""

from __future__ import annotations

import errno
import functools
import json
import re
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from ofasearch.cli import failed_search_lines, main
from ofasearch.config import parse_spec
from ofasearch.errors import SpecError
from ofasearch.results.tables import TRIAL_COLUMNS, TRIALS_FILE, write_table
from ofasearch.search.run import SPEC_HASH_KEY, claim_folder
from ofasearch.search.state import Phase, read_state, update_state
from ofasearch.utils.faults import describe_fault
from ofasearch.utils.files import file_digest
from tests.specs import MIXER, SPEC

# A train config that trains in seconds: the student alone (no teacher), one epoch.
QUICK = {
    "name": "quick",
    "data": {"dataset": "digits", "image_size": 16},
    "pairs": [{"teacher": {"model": "resnet10t"}, "student": MIXER}],
    "distill": {"method": "none"},
    "optim": {"epochs": 1, "batch_size": 64},
}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def log_dir(tmp_path, monkeypatch) -> Path:
    """``$TMPDIR`` of this test, where a fault's log goes when no results folder is known."""
    path = tmp_path / "tmpdir"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create anything in: mode 0555, or (root ignores modes) a
    path under /sys, which nobody may create folders in."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").mkdir()
    except PermissionError:
        return folder
    (folder / "probe").rmdir()
    return Path("/sys/ofasearch-read-only-test")


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _log_path(line: str) -> Path:
    match = re.search(r"full traceback in (\S+);", line)
    assert match, line
    return Path(match.group(1))


def test_read_only_storage_is_one_line_and_a_log_file(tmp_path, capsys, log_dir):
    storage = _read_only_folder(tmp_path)
    spec = _write(tmp_path / "spec.yaml", {**SPEC, "storage": str(tmp_path / "unused")})
    assert main(["run", str(spec), "--storage", str(storage)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(storage) in line and "make it writable" in line and "--storage" in line, line
    log = _log_path(line)
    assert log.parent == log_dir and log.is_file()
    text = log.read_text()
    assert "Traceback" in text and "PermissionError" in text and f"--storage {storage}" in text

    # --verbose (before the command) prints the traceback too, the one line still last
    assert main(["--verbose", "run", str(spec), "--storage", str(storage)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "PermissionError" in err
    assert err.strip().splitlines()[-1].startswith("error: ")


def test_output_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert main(["train", str(_write(tmp_path / "c.yaml", QUICK)), "-o", str(target), "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"error: --output: {target} is a file, not a folder; choose a folder"
    assert target.read_text() == "not a folder"


def test_train_never_overwrites_a_finished_run_without_overwrite(tmp_path, capsys):
    config, out = _write(tmp_path / "c.yaml", QUICK), tmp_path / "out"
    assert main(["train", str(config), "-o", str(out), "--no-progress"]) == 0
    first_metrics = (out / "metrics.json").read_text()
    first_events = sorted((out / "tensorboard").rglob("events.*"))
    assert first_events
    capsys.readouterr()

    assert main(["train", str(config), "-o", str(out), "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--output: {out} holds a finished run (metrics.json, student.safetensors)" in line
    assert "--overwrite" in line
    assert (out / "metrics.json").read_text() == first_metrics, "the finished run is untouched"

    (out / "notes.txt").write_text("mine")  # not the run's: stays
    assert main(["train", str(config), "-o", str(out), "--no-progress", "--overwrite"]) == 0
    events = sorted((out / "tensorboard").rglob("events.*"))
    assert events and not set(events) & set(first_events), "the old run's TensorBoard events are gone"
    assert len(events) == len(first_events), "one run's events, not two runs' mixed"
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1
    assert (out / "notes.txt").read_text() == "mine"


@functools.cache
def _stages() -> list[list[int]]:
    """The students' stages as planning measures them (state.json holds them)."""
    from ofasearch.search.plan import plan

    return plan(parse_spec(SPEC, "test")).available_stages


def _hand_made_folder(tmp_path: Path, phase: Phase, *, record_hash: bool = True) -> Path:
    """A results folder as run_search leaves it when it starts: spec.yaml and state.json."""
    spec = parse_spec({**SPEC, "storage": str(tmp_path)}, "test")
    folder = tmp_path / spec.name
    folder.mkdir()
    (folder / "spec.yaml").write_text(spec.to_yaml())
    state = {"phase": phase, "stages": _stages(), "started_at": 0.0}
    if record_hash:
        state[SPEC_HASH_KEY] = file_digest(folder / "spec.yaml")
    update_state(folder, **state)
    return folder


def _edit_spec(folder: Path) -> None:
    path = folder / "spec.yaml"
    data = yaml.safe_load(path.read_text())
    data["optim"]["epochs"] = 5
    path.write_text(yaml.safe_dump(data))


def test_an_edited_spec_is_never_resumed_silently(tmp_path, capsys):
    folder = _hand_made_folder(tmp_path, Phase.TEACHERS)
    started = read_state(folder)[SPEC_HASH_KEY]
    _edit_spec(folder)
    assert main(["resume", str(folder)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert (
        line.startswith(f"error: {folder / 'spec.yaml'}: edited since the search started")
        and "--force-new-spec" in line
    )
    assert read_state(folder)[SPEC_HASH_KEY] == started and read_state(folder)["phase"] is Phase.TEACHERS


def test_force_new_spec_warns_and_records_the_new_hash(tmp_path, capsys):
    folder = _hand_made_folder(tmp_path, Phase.DONE)  # a finished search: resume starts no Ray
    _edit_spec(folder)
    assert main(["resume", str(folder), "--force-new-spec"]) == 0
    out = capsys.readouterr().out
    assert "edited since the search started; --force-new-spec" in out
    assert read_state(folder)[SPEC_HASH_KEY] == file_digest(folder / "spec.yaml")
    assert main(["resume", str(folder)]) == 0, "the new spec is now the search's"


def test_a_folder_of_an_earlier_version_is_accepted_and_its_hash_recorded(tmp_path, capsys):
    folder = _hand_made_folder(tmp_path, Phase.DONE, record_hash=False)
    assert SPEC_HASH_KEY not in read_state(folder)
    assert main(["resume", str(folder)]) == 0
    assert "edited" not in capsys.readouterr().out
    assert read_state(folder)[SPEC_HASH_KEY] == file_digest(folder / "spec.yaml")


@pytest.mark.parametrize("numbered", [True, False])
def test_concurrent_claims_of_one_name_get_distinct_folders(tmp_path, numbered):
    storage, claimants = tmp_path / "results", 8
    start = threading.Barrier(claimants)
    claimed: list[Path] = []
    refused: list[SpecError] = []

    def claim() -> None:
        start.wait()
        try:
            claimed.append(claim_folder(storage, "same", lambda name: f"name: {name}\n", numbered=numbered))
        except SpecError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=claim) for _ in range(claimants)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if numbered:
        assert sorted(p.name for p in claimed) == sorted(["same"] + [f"same-{n}" for n in range(2, claimants + 1)])
        for folder in claimed:
            assert (folder / "spec.yaml").read_text() == f"name: {folder.name}\n", "each spec names its own folder"
    else:  # an explicit --name that is taken stays an error
        assert [p.name for p in claimed] == ["same"] and len(refused) == claimants - 1
        assert "already holds a search" in refused[0].problems[0]


def _trial(trial_id: str, status: str, error: str | None = None, role: str = "search") -> dict:
    """A trials.parquet row as the recorder writes it (the columns the summary prints)."""
    return {
        "trial_id": trial_id,
        "role": role,
        "status": status,
        "error": error,
        "method": "kd" if role == "baseline" else "ofa",
        "teacher": "resnet10t",
        "student": "MlpMixer",
        "val_acc": 0.1,
        "epochs": 1,
        "seconds": 1.0,
        "seed": 0,
        "config": "{}",
    }


def test_a_search_whose_every_trial_failed_exits_1_with_the_distinct_errors(tmp_path, capsys):
    folder = _hand_made_folder(tmp_path, Phase.DONE)
    mmap = "Traceback (most recent call last):\n  ...\nValueError: mmap length is greater than file size"
    rows = [
        _trial("a", "error", mmap),
        _trial("b", "error", mmap),
        _trial("c", "diverged"),
        _trial("d", "error", "RuntimeError: out of memory"),
        _trial("e", "completed", role="baseline"),  # baselines do not rescue the search
    ]
    write_table(rows, TRIAL_COLUMNS, folder / TRIALS_FILE)
    assert failed_search_lines(folder) == [
        f"every one of the 4 search trials failed ({folder}):",
        "  2 x error: ValueError: mmap length is greater than file size",
        "  1 x diverged: loss became NaN/inf",
        "  1 x error: RuntimeError: out of memory",
    ]
    assert main(["resume", str(folder)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"error: every one of the 4 search trials failed ({folder}):" and len(err) == 4

    write_table([*rows, _trial("f", "stopped")], TRIAL_COLUMNS, folder / TRIALS_FILE)
    assert failed_search_lines(folder) == [], "one trial that ended normally: the search did not fail"
    assert main(["resume", str(folder)]) == 0


def test_damaged_weights_name_the_file_and_the_remedy(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    path = tmp_path / "teacher.safetensors"
    save_file({"w": torch.zeros(64, 64)}, str(path))
    path.write_bytes(path.read_bytes()[:20])  # truncated
    with pytest.raises(Exception) as caught:
        load_file(str(path))
    line = describe_fault(caught.value)
    assert line is not None and line.startswith(f"damaged file: {path} (SafetensorError") and "delete it" in line


def test_disk_full_and_lost_ray_are_named():
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with pytest.raises(OSError) as caught, open("/dev/full", "w") as f:
        f.write("x")
        f.flush()
    assert caught.value.errno == errno.ENOSPC
    assert describe_fault(caught.value).startswith("no space left on the device of")

    from ray.exceptions import RaySystemError

    try:
        try:
            raise ConnectionError("Failed to connect to GCS within 60 seconds")
        except ConnectionError as exc:
            raise RuntimeError("Tune stopped") from exc
    except RuntimeError as outer:
        assert "lost the Ray cluster (ConnectionError" in describe_fault(outer)
    line = describe_fault(RaySystemError("System error: the GCS is gone"), then="continue with: ofasearch resume X")
    assert line.startswith("lost the Ray cluster (RaySystemError") and line.endswith("ofasearch resume X")
    assert describe_fault(ValueError("nothing known")) is None


def test_a_missing_file_names_its_path(tmp_path):
    with pytest.raises(OSError) as caught:
        (tmp_path / "gone.safetensors").read_bytes()
    line = describe_fault(caught.value)
    assert line.startswith(f"no such file or folder: {tmp_path / 'gone.safetensors'}: ") and "restore it" in line
