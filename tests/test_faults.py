"""Every fault of the documented fault list (docs/guides/search.md), injected end to end through the real CLI on a tiny
digits search (one pair, 4 samples, 3 epochs; :data:`FAULT_SPEC`) or a quick train config, each
checked for the outcome the docs promise. Expensive states are built once per module: the
undisturbed search (the reference every repaired run must reproduce) and its teacher store.

Each row of the issue's table, its promised outcome, and the test that checks it:

- Ctrl-C as the last search trial starts (a named interrupt point): exit 130, no later phase, resume finishes every
  trial once (test_ctrl_c_then_an_edited_spec_then_resume).
- SIGTERM at a named point: exit 143 with the resume line; a stale Optuna journal lock is removed;
  of two resumes at once one runs, the other exits 2 naming it (test_sigterm_then_two_resumes_at_once).
- A trial that hangs: with search.trial_timeout it ends "timed out", the search goes on
  (test_a_hung_trial_times_out_and_the_search_goes_on).
- Logit cache truncated, overwritten with random bytes, or with finite garbage; teacher weights
  truncated or with 1 MB of random bytes inside: one warning naming the file, the entry rebuilt
  (a teacher retrained, its accuracy measured again), and the search finds exactly what the
  undisturbed one did (test_a_damaged_store_entry_is_named_rebuilt_and_the_search_goes_on).
- spec.yaml of an interrupted search edited, then resume: refused in one line, exit 2; with the
  edit undone the resume goes on (test_ctrl_c_then_an_edited_spec_then_resume); --force-new-spec
  warns and records it (test_force_new_spec_warns_and_records_the_new_hash).
- A second run joining a running one's Ray: owned by the shared-Ray work, whose tests are in
  tests/cluster/test_ray_session.py.
- Two runs of one spec at the same moment: distinct folders, claimed atomically
  (test_concurrent_claims_of_one_name_get_distinct_folders).
- trials.parquet deleted (or damaged) after the search: status, report, export and resume say in
  one line what is missing and that `ofasearch rebuild` recreates it, exit 1; the rebuild
  restores the recorded rows (test_a_deleted_or_damaged_table_is_named_and_rebuilt).
- A read-only shared teacher store: used by another user, nothing written to it
  (test_a_read_only_shared_store_is_used_by_another_user).
- train --output an existing run: exit 2 unless --overwrite, which replaces the run, TensorBoard
  included (test_train_never_overwrites_a_finished_run_without_overwrite).
- Read-only --storage: one `error:` line, exit 1, the traceback in a log file
  (test_read_only_storage_is_one_line_and_a_log_file).
- Storage made read-only mid-run; the disk full mid-run: one `error:` line naming the path and
  the resume, exit 1; once writable again (space freed), resume finishes the search as the
  undisturbed one did (test_storage_made_read_only_mid_run_then_resume,
  test_a_full_disk_mid_run_then_resume).
- --output a file: one `error:` line, exit 2 (test_output_that_is_a_file).
- The teacher store's disk full while the logit cache is built: one `error:` line, no temporary
  folder left, the same command succeeds once there is space
  (test_a_full_cache_disk_is_one_line_and_leaves_no_temp_folder).

The mid-run file-system faults are real: a read-only bind mount and a 120 KiB tmpfs, in a private
mount namespace (``unshare --mount``, as root), so nothing outside the test sees them.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from ofasearch.cli import failed_search_lines, main
from ofasearch.config import parse_spec
from ofasearch.errors import SpecError
from ofasearch.results.tables import EPOCH_COLUMNS, EPOCHS_FILE, TRIAL_COLUMNS, TRIALS_FILE, read_rows, write_table
from ofasearch.search.claim import claim_folder
from ofasearch.search.resume_checks import SPEC_HASH_KEY
from ofasearch.search.state import Phase, read_state, update_state
from ofasearch.utils.faults import describe_fault
from ofasearch.utils.files import file_digest
from ofasearch.utils.killpoints import HANG_AT_VAR, INTERRUPT_AT_VAR, TERMINATE_AT_VAR
from tests.helpers.background import saved_as_finished, start_search, table_rows
from tests.helpers.rebuilt import assert_rebuild_matches
from tests.helpers.specs import MIXER, SPEC, TEACHER

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "ofasearch.cli"]
# The tiny search: one pair, 4 samples, 3 epochs, one trial at a time (reproducible).
# Its teacher trains for one epoch: this module's store is its own, so the undisturbed search
# trains it and the damaged-weights test trains it again; no fault here depends on its accuracy.
FAULT_TEACHER = {**TEACHER, "recipe": {**TEACHER["recipe"], "epochs": 1}}
FAULT_SPEC = {
    **SPEC,
    "name": "faults",
    "pairs": [{"teacher": FAULT_TEACHER, "student": MIXER}],
    "search": {**SPEC["search"], "num_samples": 4},
}
SEARCH_ENDED = ("completed", "stopped", "diverged", "error")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This module's teacher store: the damage tests break its entries, no other module sees them."""
    path = tmp_path_factory.mktemp("fault-store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OFASEARCH_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def ray_here() -> Iterator[None]:
    """In-process searches share one local Ray, shut down after the module."""
    import ray

    yield
    ray.shutdown()


def _no_ray_here() -> None:
    """A search in a child process must start its own Ray, not join this process's."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _run_spec(tmp: Path, name: str, **changes: object) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**FAULT_SPEC, "storage": str(tmp / "results"), **changes}))
    return path


@pytest.fixture(scope="module")
def undisturbed(store: Path, ray_here: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny search run once without a fault: what each repaired run must reproduce."""
    tmp = tmp_path_factory.mktemp("undisturbed")
    assert main(["run", str(_run_spec(tmp, "spec"))]) == 0
    return tmp / "results" / FAULT_SPEC["name"]


def _outcomes(folder: Path) -> list[tuple]:
    """What a search found, without its trial ids or timings: every trial's role, proposer,
    values, status, epochs and accuracy, in a fixed order."""
    rows = read_rows(folder / TRIALS_FILE)
    searched = sorted({k for row in rows for k in row if "." in k})  # distill.eps, optim.lr, ...
    keys = ("role", "proposed_by", "method", *searched, "status", "epochs", "val_acc")
    return sorted(tuple(str(row.get(k)) for k in keys) for row in rows)


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _log_path(line: str) -> Path:
    match = re.search(r"full traceback in (\S+);", line)
    assert match, line
    return Path(match.group(1))


# --- Ctrl-C, and an edited spec.yaml before the resume ---------------------------------------


def test_ctrl_c_then_an_edited_spec_then_resume(store, undisturbed, tmp_path, capsys):
    """Ctrl-C (SIGINT to the driver) the moment the last search trial starts, when nothing is left
    to schedule (what once let the search run on to the end): at a named point, not by timing."""
    _no_ray_here()
    spec = {**FAULT_SPEC, "name": "interrupted", "storage": str(tmp_path / "results")}
    proc, folder = start_search(tmp_path, spec, env={INTERRUPT_AT_VAR: "search-started:4"})
    rc = proc.wait(timeout=600)
    assert rc == 130, f"Ctrl-C ends with 130 and says how to resume: {(tmp_path / 'driver.log').read_text()[-3000:]}"
    rows = table_rows(folder)
    assert sorted(r["status"] in ("completed", "stopped") for r in rows if r["role"] == "search") == [
        False,
        True,
        True,
        True,
    ], rows
    assert json.loads((folder / "state.json").read_text())["phase"] == "search", "interrupted, not run to the end"
    baselines = sorted((r["method"], r["status"]) for r in rows if r["role"] == "baseline")
    assert baselines == [("kd", "completed"), ("none", "completed")], "the baselines ran before the search"
    # Like a crash, Ctrl-C keeps what Tune saved (every TUNE_STATE_PERIOD_S, 2 s): the trials its
    # saved state holds as finished must survive unchanged; the others run again
    saved = saved_as_finished(folder)
    done_before = {r["trial_id"]: r["val_acc"] for r in rows if r["trial_id"] in saved}
    with capsys.disabled():
        print(f"\ninterrupted as search trial 4 started: {len(saved)} of 3 finished trials in Tune's saved state")

    # the spec edited before the resume: refused in one line, nothing run
    original = (folder / "spec.yaml").read_text()
    _edit_spec(folder)
    assert main(["resume", str(folder)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {folder / 'spec.yaml'}: edited since the search started"), line
    assert table_rows(folder) == rows, "nothing ran"
    (folder / "spec.yaml").write_text(original)  # the edit undone

    result = subprocess.run([*CLI, "resume", str(folder)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = table_rows(folder)
    searched = [r for r in rows if r["role"] == "search" and r["status"] in ("completed", "stopped")]
    assert len(searched) == 4
    assert len({r["trial_id"] for r in rows}) == len(rows)
    assert {t: v for t, v in ((r["trial_id"], r["val_acc"]) for r in searched) if t in saved} == done_before, (
        "finished trials are kept as they were"
    )
    assert sorted(r["method"] for r in rows if r["role"] == "baseline") == ["kd", "none"]
    assert (folder / "best.yaml").is_file()
    assert_rebuild_matches(folder, tmp_path)  # Tune's folders after Ctrl-C and a resume hold the same rows


# --- SIGTERM, two drivers on one folder, a stale journal lock, a hung trial ---------------------


def test_sigterm_then_two_resumes_at_once(store, undisturbed, tmp_path):
    """SIGTERM (a scheduler's or a spot instance's stop) as search trial 2 starts: exit 143 with the
    resume line, as Ctrl-C. A journal lock left behind is removed; of two resumes started at
    once, one finishes the search and the other exits 2 naming it; every trial is there once."""
    _no_ray_here()
    spec = {
        **FAULT_SPEC,
        "name": "terminated",
        "optim": {**FAULT_SPEC["optim"], "epochs": 2},
        "search": {**FAULT_SPEC["search"], "num_samples": 3, "baselines": []},
        "storage": str(tmp_path / "results"),
    }
    proc, folder = start_search(tmp_path, spec, env={TERMINATE_AT_VAR: "search-started:2"})
    rc = proc.wait(timeout=600)
    log = (tmp_path / "driver.log").read_text()
    assert rc == 143, f"SIGTERM ends with 143: {log[-3000:]}"
    assert f"search interrupted; continue it with: ofasearch resume {folder} (SIGTERM)" in log
    assert json.loads((folder / "state.json").read_text())["phase"] == "search", "stopped, not run to the end"
    assert "Traceback" not in log

    (folder / "optuna.log.lock").symlink_to(folder / "optuna.log")  # as a kill mid-append leaves it
    resumes = [
        subprocess.Popen([*CLI, "resume", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    ended = sorted(((p.wait(timeout=600), *p.communicate()) for p in resumes), key=lambda r: r[0])
    (ok, out, err), (refused, _, refusal) = ended
    assert (ok, refused) == (0, 2), (out[-2000:], err[-2000:], refusal)
    line = _one_error_line(refusal)
    assert re.match(rf"error: {re.escape(str(folder))}: another driver \(pid \d+ on \S+, `ofasearch resume ", line)
    assert line.endswith("drives this search; wait for it to end, or stop it first"), line
    assert "optuna.log.lock: left by a driver killed while writing the study; removed" in out + err
    rows = table_rows(folder)
    assert len({r["trial_id"] for r in rows}) == len(rows), "each trial once"
    assert sorted(r["status"] in SEARCH_ENDED for r in rows if r["role"] == "search") == [True] * 3
    assert not [r for r in rows if r["status"] == "running"]
    assert (folder / "best.yaml").is_file()


def test_a_hung_trial_times_out_and_the_search_goes_on(store, undisturbed, tmp_path):
    """The KD baseline sleeps for ever in its first step; with search.trial_timeout it ends as an
    error saying so, and every other trial runs to its end."""
    _no_ray_here()
    spec = {
        **FAULT_SPEC,
        "name": "hung",
        "storage": str(tmp_path / "results"),
        "optim": {**FAULT_SPEC["optim"], "epochs": 1},
        "search": {**FAULT_SPEC["search"], "num_samples": 1, "trial_timeout": "10s"},
    }
    proc, folder = start_search(tmp_path, spec, env={HANG_AT_VAR: "trial:kd"})
    rc = proc.wait(timeout=600)
    log = (tmp_path / "driver.log").read_text()
    rows = {r["method"] if r["role"] == "baseline" else r["role"]: r for r in table_rows(folder)}
    assert rows["kd"]["status"] == "error", log[-3000:]
    assert "timed out after 10 s (search.trial_timeout)" in rows["kd"]["error"]
    assert rows["none"]["status"] == rows["search"]["status"] == "completed"
    assert json.loads((folder / "state.json").read_text())["phase"] == "done"
    assert rc == 0, log[-3000:]


# --- Damaged entries of the teacher store -----------------------------------------------------


def _finite_garbage(path: Path) -> None:
    count = path.stat().st_size // 2
    path.write_bytes(np.random.default_rng(0).uniform(-5, 5, count).astype(np.float16).tobytes())


def _random_megabyte_inside(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 3)
        f.write(os.urandom(1 << 20))


def _store_file(folder: Path, which: str) -> Path:
    """The undisturbed search's teacher weights or teacher-logit cache, as state.json names them."""
    (teacher,) = read_state(folder)["teachers"]
    if which == "teacher":
        return Path(teacher["info"]["checkpoint"])
    return Path(teacher["cache"]["folder"]) / "logits.f16"


# One search per store file: each kind of damage (truncated, random bytes, finite garbage, a
# random megabyte inside) is detected and repaired in tests/training/test_logit_cache.py and
# test_teacher.py; here the search around the repair is what is tested.
@pytest.mark.parametrize(
    ("which", "damage"),
    [("logits", _finite_garbage), ("teacher", _random_megabyte_inside)],
    ids=["logits-finite-garbage", "teacher-random-1mb"],
)
def test_a_damaged_store_entry_is_named_rebuilt_and_the_search_goes_on(
    store, ray_here, undisturbed, tmp_path, capsys, which: str, damage: Callable[[Path], None]
):
    path = _store_file(undisturbed, which)
    damage(path)
    assert main(["run", str(_run_spec(tmp_path, "spec"))]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if "rebuilding it" in line or "retraining the teacher" in line]
    assert len(warnings) == 1, out
    assert str(path) in warnings[0], out
    if which == "teacher":  # retrained, its accuracy measured again: the same seeded weights
        assert "training teacher resnet10t" in out
        assert file_digest(path) == read_state(undisturbed)["teachers"][0]["info"]["sha256"]
    assert _outcomes(tmp_path / "results" / FAULT_SPEC["name"]) == _outcomes(undisturbed)


# --- A deleted or damaged results table -------------------------------------------------------


def test_a_deleted_or_damaged_table_is_named_and_rebuilt(undisturbed, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(undisturbed, folder)
    recorded = read_rows(folder / TRIALS_FILE)
    (folder / TRIALS_FILE).unlink()
    (folder / EPOCHS_FILE).unlink()
    rebuild = f"rebuild it from Ray Tune's own folders with: ofasearch rebuild {folder}"
    for command in (["status"], ["report"], ["export"], ["resume"]):
        assert main([*command, str(folder)]) == 1, command
        captured = capsys.readouterr()
        line = _one_error_line(captured.err)
        missing = f"error: {folder / TRIALS_FILE}: missing, though Ray Tune's folders hold 6 started trial(s)"
        assert line == f"{missing} of this search; {rebuild}", line
        assert "no trials yet" not in captured.out
        assert "no best.yaml" not in captured.out

    assert main(["rebuild", str(folder)]) == 0
    assert f"rebuilt {TRIALS_FILE} and {EPOCHS_FILE} of {folder}" in capsys.readouterr().out
    rebuilt = {r["trial_id"]: r for r in read_rows(folder / TRIALS_FILE)}
    assert rebuilt == {r["trial_id"]: r for r in recorded}, "the rows the recorder wrote"
    assert main(["status", str(folder)]) == 0
    assert "no trials yet" not in capsys.readouterr().out
    assert main(["resume", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"best config: {folder / 'best.yaml'}" in out
    assert "no best.yaml" not in out
    assert main(["export", str(folder), "-o", str(tmp_path / "best.yaml")]) == 0

    (folder / EPOCHS_FILE).unlink()  # only the epochs: the report needs them
    assert main(["report", str(folder)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"error: {folder / EPOCHS_FILE}: missing, though {TRIALS_FILE} records trained epochs; {rebuild}"
    (folder / TRIALS_FILE).write_bytes(b"PAR1 not a table")  # damaged
    for command in ("status", "resume"):
        assert main([command, str(folder)]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: {folder / TRIALS_FILE}: unreadable Parquet table (")
        assert line.endswith(rebuild)
    assert main(["rebuild", str(folder)]) == 0
    assert main(["report", str(folder)]) == 0


# --- A shared, read-only teacher store --------------------------------------------------------


def test_a_read_only_shared_store_is_used_by_another_user(store, undisturbed, tmp_path):
    """`ofasearch train` of a KD config reads the teacher and its logit cache from a store it may
    not write to (as user nobody: root writes anywhere), and writes nothing there."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as another user (nobody)")
    shared = Path(tempfile.mkdtemp(prefix="ofasearch-shared-"))
    try:
        shared.chmod(0o755)
        shutil.copytree(store, shared / "store")
        for lock in (shared / "store").rglob("*.lock"):
            lock.unlink()
        subprocess.run(["chmod", "-R", "a-w,a+rX", str(shared / "store")], check=True)
        before = sorted((p.relative_to(shared), p.stat().st_mtime_ns) for p in (shared / "store").rglob("*"))
        out = shared / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        config = {
            **QUICK,
            "pairs": FAULT_SPEC["pairs"],
            "distill": {"method": "kd", "teacher_cache": "on"},
            "optim": {"epochs": FAULT_SPEC["optim"]["epochs"], "batch_size": 64},
        }
        (out / "kd.yaml").write_text(yaml.safe_dump(config))
        done = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                *CLI,
                "train",
                str(out / "kd.yaml"),
                "-o",
                str(out / "run"),
                "--no-progress",
            ],
            cwd=ROOT,
            env={**os.environ, "OFASEARCH_CACHE": str(shared / "store"), "HOME": str(shared)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
        assert "(cached" in done.stdout, done.stdout
        assert "building the teacher-logit cache" not in done.stdout, done.stdout
        assert (out / "run" / "student.safetensors").is_file()
        after = sorted((p.relative_to(shared), p.stat().st_mtime_ns) for p in (shared / "store").rglob("*"))
        assert after == before, "nothing written to the shared store"
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(shared)], check=True)
        shutil.rmtree(shared)


# --- File-system faults in the middle of a search (private mount namespace) ------------------


def _can_mount() -> str | None:
    """Why mounts cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "mounting a tmpfs or a read-only bind mount needs root"
    if shutil.which("unshare") is None:
        return "no unshare to make a private mount namespace"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    return None if probe.returncode == 0 else f"unshare --mount refused: {probe.stderr.decode().strip()}"


def _in_mount_namespace(script: str, tmp: Path, timeout: int = 900) -> dict[str, str]:
    """Run a shell ``script`` in a private mount namespace (its mounts vanish with it); it writes
    what the test checks as files under ``$OUT``; returns them by name."""
    out = tmp / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "OFASEARCH": " ".join(CLI), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["unshare", "--mount", "sh", "-c", script], cwd=tmp, env=env, timeout=timeout)
    assert done.returncode == 0, f"the script itself failed ({done.returncode})"
    return {p.name: p.read_text() for p in out.iterdir() if p.is_file()}


def _check_fault_then_resume(files: dict[str, str], folder: Path, reason: str) -> str:
    """The run failed with one line naming the fault and the resume; the resume finished the search."""
    assert files["run.rc"].strip() == "1", files["run.err"][-2000:]
    lines = [line for line in files["run.err"].splitlines() if line.startswith("error: ") or "Traceback" in line]
    assert len(lines) == 1, files["run.err"][-3000:]
    line = lines[0]
    assert line.startswith(f"error: {reason}"), line
    assert f"then continue with: ofasearch resume {folder}" in line, line
    assert files["resume.rc"].strip() == "0", files["resume.err"][-3000:]
    return line


def _assert_finished(folder: Path) -> None:
    """The search ran to the end: each of its 4 search trials once and ended, both baselines, best.yaml.
    (Not compared with the undisturbed run: trials re-run after a restore meet ASHA in another order.)"""
    rows = read_rows(folder / TRIALS_FILE)
    search = [r for r in rows if r["role"] == "search"]
    assert len(search) == 4, search
    assert all(r["status"] in SEARCH_ENDED for r in search), search
    assert len({r["trial_id"] for r in rows}) == len(rows)
    assert sorted(r["method"] for r in rows if r["role"] == "baseline" and r["status"] == "completed") == ["kd", "none"]
    assert read_state(folder)["phase"] == "done"
    assert (folder / "best.yaml").is_file()


def _storage_to_mount(tmp_path: Path) -> tuple[Path, Path, Path]:
    """An empty storage folder to mount a fault on, the tiny spec, and the search folder the run
    will make there; skips where this user cannot mount."""
    why = _can_mount()
    if why:
        pytest.skip(why)
    _no_ray_here()
    storage = tmp_path / "storage"
    storage.mkdir()
    return storage, _run_spec(tmp_path, "spec"), storage / FAULT_SPEC["name"]


def test_storage_made_read_only_mid_run_then_resume(store, undisturbed, tmp_path):
    storage, spec, folder = _storage_to_mount(tmp_path)
    script = f"""
        S={storage}
        mount --bind "$S" "$S"
        $OFASEARCH run {spec} --storage "$S" >"$OUT/run.out" 2>"$OUT/run.err" &
        PID=$!
        until grep -q "completed: val_acc" "$OUT/run.out"; do kill -0 $PID 2>/dev/null || break; sleep 0.2; done
        mount -o remount,bind,ro "$S"; echo $? >"$OUT/remount.rc"
        wait $PID; echo $? >"$OUT/run.rc"
        mount -o remount,bind,rw "$S"
        $OFASEARCH resume {folder} >"$OUT/resume.out" 2>"$OUT/resume.err"; echo $? >"$OUT/resume.rc"
    """
    files = _in_mount_namespace(script, tmp_path)
    assert files["remount.rc"].strip() == "0", "the storage was made read-only while the search ran"
    line = _check_fault_then_resume(files, folder, f"read-only file system: {folder}")
    assert "make it writable for this user" in line
    _assert_finished(folder)
    assert_rebuild_matches(folder, tmp_path, faulted=True)


def test_a_full_disk_mid_run_then_resume(store, undisturbed, tmp_path):
    """The results folder on a 120 KiB tmpfs: it fills during the search (a finished tiny search
    takes about 260 KB); then the tmpfs is grown (space freed) and the search resumed."""
    storage, spec, folder = _storage_to_mount(tmp_path)
    script = f"""
        S={storage}
        mount -t tmpfs -o size=120k tmpfs "$S"
        $OFASEARCH run {spec} --storage "$S" >"$OUT/run.out" 2>"$OUT/run.err"; echo $? >"$OUT/run.rc"
        df -k "$S" | tail -1 >"$OUT/df"
        mount -o remount,size=64m "$S"
        $OFASEARCH resume {folder} >"$OUT/resume.out" 2>"$OUT/resume.err"; echo $? >"$OUT/resume.rc"
        cp -a "$S/." "{tmp_path / "kept"}/"
    """
    (tmp_path / "kept").mkdir()
    files = _in_mount_namespace(script, tmp_path)
    # full when the write failed; the failed write's partial file is removed again afterwards
    assert int(files["df"].split()[4].rstrip("%")) >= 90, files["df"]
    line = _check_fault_then_resume(files, folder, "no space left on the device of ")
    assert "free some space" in line
    kept = tmp_path / "kept" / FAULT_SPEC["name"]
    assert not list(kept.glob(".*.tmp")), "no half-written temporary file left"
    _assert_finished(kept)
    assert_rebuild_matches(kept, tmp_path, faulted=True)


def test_a_full_cache_disk_is_one_line_and_leaves_no_temp_folder(store, undisturbed, tmp_path):
    """The teacher store on a tmpfs holding the stored teacher and about 24 KiB more: the logit
    cache (about 77 KB here) cannot be built by `ofasearch train`. One line naming the disk, no
    temporary folder left in the store; with space freed the same command builds it and trains."""
    why = _can_mount()
    if why:
        pytest.skip(why)
    cache = tmp_path / "cache"
    cache.mkdir()
    config = {
        **FAULT_SPEC,
        "name": "cached",
        "distill": {"method": "ofa", "stages": [3, 4]},
        "optim": {**FAULT_SPEC["optim"], "lr": 2e-3},  # 3 epochs: 3 views of 1,294 images x 10 logits
    }
    config.pop("search")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    train = f"$OFASEARCH train {tmp_path / 'config.yaml'} -o {tmp_path / 'run'} --no-progress"
    script = f"""
        C={cache}
        KB=$(du -sk "{store / "teachers"}" | cut -f1)
        mount -t tmpfs -o size=$((KB + 24))k tmpfs "$C"
        cp -a "{store / "teachers"}" "$C/"
        export OFASEARCH_CACHE="$C"
        {train} >"$OUT/run.out" 2>"$OUT/run.err"; echo $? >"$OUT/run.rc"
        ls -a "$C/logits" >"$OUT/logits" 2>&1
        mount -o remount,size=64m "$C"
        {train} >"$OUT/again.out" 2>"$OUT/again.err"; echo $? >"$OUT/again.rc"
    """
    files = _in_mount_namespace(script, tmp_path)
    assert files["run.rc"].strip() == "1", files["run.err"][-2000:]
    line = _one_error_line(files["run.err"])
    assert line.startswith(f"error: no space left on the device of {cache}/logits/"), line
    assert "free some space" in line
    assert not [n for n in files["logits"].split() if ".tmp" in n], files["logits"]
    assert files["again.rc"].strip() == "0", files["again.err"][-2000:]
    assert (tmp_path / "run" / "student.safetensors").is_file()


# --- Faults caught before Ray starts ------------------------------------------------------------


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


def test_read_only_storage_is_one_line_and_a_log_file(tmp_path, capsys, log_dir):
    storage = _read_only_folder(tmp_path)
    spec = _write(tmp_path / "spec.yaml", {**SPEC, "storage": str(tmp_path / "unused")})
    assert main(["run", str(spec), "--storage", str(storage)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert str(storage) in line, line
    assert "make it writable" in line, line
    assert "--storage" in line, line
    log = _log_path(line)
    assert log.parent == log_dir / f"ofasearch-{os.getuid()}"
    assert log.is_file()
    text = log.read_text()
    assert "Traceback" in text
    assert "PermissionError" in text
    assert f"--storage {storage}" in text

    # --verbose (before the command) prints the traceback too, the one line still last
    assert main(["--verbose", "run", str(spec), "--storage", str(storage)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "PermissionError" in err
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
    assert events, "the old run's TensorBoard events are gone"
    assert not set(events) & set(first_events), "the old run's TensorBoard events are gone"
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
    assert line.startswith(f"error: {folder / 'spec.yaml'}: edited since the search started")
    assert "--force-new-spec" in line
    assert read_state(folder)[SPEC_HASH_KEY] == started
    assert read_state(folder)["phase"] is Phase.TEACHERS


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
        assert [p.name for p in claimed] == ["same"]
        assert len(refused) == claimants - 1
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
    write_table([], EPOCH_COLUMNS, folder / EPOCHS_FILE)  # a search writes both tables
    assert failed_search_lines(folder) == [
        f"every one of the 4 search trials failed ({folder}):",
        "  2 x error: ValueError: mmap length is greater than file size",
        "  1 x diverged: loss became NaN/inf",
        "  1 x error: RuntimeError: out of memory",
    ]
    assert main(["resume", str(folder)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"error: every one of the 4 search trials failed ({folder}):"
    assert len(err) == 4

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
    assert line is not None
    assert line.startswith(f"damaged file: {path} (SafetensorError")
    assert "delete it" in line


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
    assert line.startswith("lost the Ray cluster (RaySystemError")
    assert line.endswith("ofasearch resume X")
    assert describe_fault(ValueError("nothing known")) is None


def test_a_missing_file_names_its_path(tmp_path):
    with pytest.raises(OSError) as caught:
        (tmp_path / "gone.safetensors").read_bytes()
    line = describe_fault(caught.value)
    assert line.startswith(f"no such file or folder: {tmp_path / 'gone.safetensors'}: ")
    assert "restore it" in line
