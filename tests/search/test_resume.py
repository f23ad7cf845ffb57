"""A driver killed with SIGKILL mid-search: `ofasearch resume` finishes it, keeps every finished
trial once, re-runs the unfinished ones, joins the local Ray the crash left running and stops it
at the end."""

import json
import os
import shutil
import signal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import yaml

from ofasearch.cluster.ray_instances import RECORDS_FILE, recorded_sessions, records_dir, session_processes
from ofasearch.search.run import resume_search
from ofasearch.utils.killpoints import KILL_AT_VAR
from tests.helpers.background import run_driver, saved_as_finished, start_search, table_rows, wait_for
from tests.helpers.logcapture import log_lines
from tests.helpers.rebuilt import assert_rebuild_matches
from tests.helpers.specs import MIXER, SPEC, TEACHER

pytestmark = pytest.mark.slow  # starts Ray or trains a model: not in the fast tier

NUM_SAMPLES = 6
ENDED = ("completed", "stopped", "diverged", "error")


def test_sigkill_then_resume_finishes_the_search(tmp_path):
    spec = {
        **SPEC,
        "name": "crash",
        "pairs": [{"teacher": TEACHER, "student": MIXER}],
        "search": {**SPEC["search"], "num_samples": NUM_SAMPLES},
        "storage": str(tmp_path / "results"),
    }
    driver, folder = start_search(tmp_path, spec)

    def search_ended() -> list[dict]:  # the baselines run first: the crash is meant for the search
        return [r for r in table_rows(folder) if r["role"] == "search" and r["status"] in ENDED]

    wait_for(driver, lambda: len(search_ended()) >= 2, "two search trials ended")
    # Tune saves its experiment state every TUNE_STATE_PERIOD_S (2 s): the trials its saved state
    # holds as finished must survive the crash unchanged (waited for, not slept for: a loaded
    # machine may save later than a fixed sleep allows)
    kept = {r["trial_id"]: r for r in search_ended()}
    assert len(kept) >= 2

    def saved_with_them_finished() -> bool:
        try:
            return set(kept) <= saved_as_finished(folder, ("TERMINATED", "ERROR"))
        except (OSError, ValueError):  # not written yet, or caught mid-write
            return False

    wait_for(driver, saved_with_them_finished, "Tune's saved state with them finished")
    seen_before_kill = table_rows(folder)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    # the local Ray the driver started runs in its own process group: the crash leaves it whole
    instance = next(r for r in recorded_sessions() if r["started_by"] == driver.pid)
    assert {"gcs_server", "raylet"} <= {p.name() for p in session_processes(instance)}

    try:
        with log_lines() as logs:
            resume_search(folder, verbose=0)
    finally:
        ray.shutdown()

    assert any(f"joining the local Ray instance ofasearch started at {instance['address']}" in x for x in logs), logs
    assert session_processes(instance) == [], "the resume, the last driver to leave it, stopped the instance"
    rows = table_rows(folder)
    search = [r for r in rows if r["role"] == "search"]
    assert len(search) == NUM_SAMPLES, "each trial once: none lost, none duplicated"
    assert len({r["trial_id"] for r in search}) == NUM_SAMPLES
    assert all(r["status"] in ENDED for r in rows)
    by_id = {r["trial_id"]: r for r in rows}
    for trial_id, before in kept.items():
        after = by_id[trial_id]
        assert (after["status"], after["epochs"], after["val_acc"]) == (
            before["status"],
            before["epochs"],
            before["val_acc"],
        )
    assert len(seen_before_kill) < len(rows), "the resume ran the trials the crash cut short"
    epochs = pq.read_table(folder / "epochs.parquet").to_pylist()
    for row in rows:
        assert sorted(e["epoch"] for e in epochs if e["trial_id"] == row["trial_id"]) == list(
            range(1, row["epochs"] + 1)
        )
    assert sorted(r["method"] for r in rows if r["role"] == "baseline") == ["kd", "none"]
    assert (folder / "best.yaml").is_file()
    assert os.path.getsize(folder / "trials.parquet") > 0
    assert_rebuild_matches(folder, tmp_path)  # Tune's folders after a kill and a resume hold the same rows


def test_a_kill_between_or_inside_grid_phases_resumes_every_point_once(digits_search, tmp_path):
    """The state a kill leaves inside the baselines (the first phase after the teachers): phase
    `baselines`, Tune's baselines experiment without its saved state, two baselines finished, one
    cut short (`running`), the rest never started. Built by hand, so no timing decides the outcome;
    the search that follows is restored from Tune's saved state as it was and runs nothing again."""
    folder = tmp_path / digits_search.name
    shutil.copytree(digits_search, folder)
    state = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps({**state, "phase": "baselines"}))
    for saved in (folder / "baselines").glob("experiment_state*.json"):
        saved.unlink()
    rows = pq.read_table(folder / "trials.parquet").to_pylist()
    baselines = sorted((r for r in rows if r["role"] == "baseline"), key=lambda r: r["trial_id"])
    kept, cut, lost = baselines[:2], baselines[2], baselines[3:]
    cut = {**cut, "status": "running"}
    others = [r for r in rows if r["role"] != "baseline"]
    pq.write_table(pa.Table.from_pylist([*others, *kept, cut]), folder / "trials.parquet")
    never_started = {r["trial_id"] for r in lost}
    epochs = [e for e in pq.read_table(folder / "epochs.parquet").to_pylist() if e["trial_id"] not in never_started]
    pq.write_table(pa.Table.from_pylist(epochs), folder / "epochs.parquet")
    try:
        resume_search(folder, verbose=0)
    finally:
        ray.shutdown()
    after = pq.read_table(folder / "trials.parquet").to_pylist()
    again = [r for r in after if r["role"] == "baseline"]
    assert len(again) == len(baselines) == 8
    assert all(r["status"] == "completed" for r in again)
    assert sorted((r["student"], r["method"]) for r in again) == sorted((r["student"], r["method"]) for r in baselines)
    by_id = {r["trial_id"]: r for r in after}
    for row in kept:  # finished before the kill: kept as they were
        assert by_id[row["trial_id"]]["val_acc"] == row["val_acc"]
    assert cut["trial_id"] not in by_id, "cut trials run again as new trials"
    assert not never_started & set(by_id), "cut trials run again as new trials"
    assert [r for r in after if r["role"] == "search"] == [r for r in rows if r["role"] == "search"]
    assert json.loads((folder / "state.json").read_text())["phase"] == "done"
    epochs = pq.read_table(folder / "epochs.parquet").to_pylist()
    assert {e["trial_id"] for e in epochs} == {r["trial_id"] for r in after}, "no epochs of dropped trials"


# (kill point, the phase state.json holds after that kill): teacher preparation, inside the
# baselines, the baselines -> search hand-over, inside the search, the search -> confirmation
# hand-over, inside the confirmation, after the end. Each is a named point the driver kills itself at
# (ofasearch.utils.killpoints), so no timing decides where the kill lands.
SWEEP = [
    # right after `ray start`, before the instance's full record: only its mark is recorded
    ("ray-started", "teachers"),
    ("teachers", "teachers"),
    ("baseline:1", "baselines"),
    ("baselines-done", "baselines"),
    ("search:2", "search"),
    ("search-done", "search"),
    ("confirm:1", "confirm"),
    ("done", "done"),  # finished, but killed before leaving Ray: the last resume stops the instance
]
EXPECTED = {"search": 4, "baseline": 2, "confirm": 3}  # 4 samples; none + kd; top-1 and 2 baselines on 1 more seed


def _counts(folder) -> dict[str, tuple[int, int]]:
    """Per role: (trials ended, trials still `running`) in trials.parquet."""
    rows = table_rows(folder)
    return {
        role: (
            sum(r["role"] == role and r["status"] in ENDED for r in rows),
            sum(r["role"] == role and r["status"] == "running" for r in rows),
        )
        for role in EXPECTED
    }


def test_a_kill_at_every_phase_resumes_to_every_trial_once(tmp_path):
    """One search killed (SIGKILL) in turn at each point of SWEEP, resumed after each
    kill; the last resume finishes it with every trial of every phase exactly once, and no Ray
    process is left (the first kill's instance included, which was only marked)."""
    spec = {
        **SPEC,
        "name": "sweep",
        "pairs": [{"teacher": TEACHER, "student": MIXER}],
        "optim": {**SPEC["optim"], "epochs": 2},
        "search": {**SPEC["search"], "num_samples": 4, "confirm": {"top_k": 1, "seeds": 2}},
        "storage": str(tmp_path / "results"),
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    folder = tmp_path / "results" / "sweep"
    sweep = []
    for n, (point, phase) in enumerate(SWEEP):
        args = ["run", "spec.yaml", "--num-cpus", "2"] if n == 0 else ["resume", str(folder)]
        rc = run_driver(tmp_path, args, {KILL_AT_VAR: point})
        log = (tmp_path / "driver.log").read_text()
        assert rc == -signal.SIGKILL, f"the driver never reached kill point {point} (exit {rc}): {log[-2000:]}"
        assert json.loads((folder / "state.json").read_text())["phase"] == phase
        sweep.append((point, _counts(folder)))
        if point == "ray-started":
            (starting,) = json.loads((records_dir() / RECORDS_FILE).read_text())["starting"]
            orphans = session_processes({"mark": starting["mark"], "started_at": 0})
            assert {"gcs_server", "raylet"} <= {p.name() for p in orphans}, "the killed driver's instance runs on"
    rc = run_driver(tmp_path, ["resume", str(folder)])
    assert rc == 0, (tmp_path / "driver.log").read_text()[-3000:]
    after = _counts(folder)
    print("\nkill point -> trials (ended, running) per role before the resume; after the last resume:")
    for point, counts in sweep:
        print(f"  {point:15s} {counts}")
    print(f"  {'(finished)':15s} {after}")

    assert after == {role: (n, 0) for role, n in EXPECTED.items()}, "every trial of every phase, once"
    rows = table_rows(folder)
    assert len({r["trial_id"] for r in rows}) == len(rows) == sum(EXPECTED.values())
    epochs = pq.read_table(folder / "epochs.parquet").to_pylist()
    for row in rows:  # each trial's epochs once, none of a dropped trial
        assert sorted(e["epoch"] for e in epochs if e["trial_id"] == row["trial_id"]) == list(
            range(1, row["epochs"] + 1)
        )
    assert {e["trial_id"] for e in epochs} == {r["trial_id"] for r in rows}
    # the instance only marked was stopped by the next command, never joined as somebody else's
    log = (tmp_path / "driver.log").read_text()
    assert "whose starting ofasearch driver was killed before it recorded the instance" in log
    assert "joining the Ray instance at" not in log
    assert session_processes({"mark": starting["mark"], "started_at": 0}) == []
    assert json.loads((records_dir() / RECORDS_FILE).read_text())["starting"] == []
    assert json.loads((folder / "state.json").read_text())["phase"] == "done"
    assert (folder / "best.yaml").is_file()
    # the kills left the local Ray running (its own process group); the resumes joined it, the last stopped it
    assert not [r for r in recorded_sessions() if session_processes(r)]


def test_a_resume_on_changed_images_is_refused_in_one_line(tmp_path, capsys):
    """An image folder whose files changed after the search started: resume names the change and
    exits 2 before anything runs; --force-new-spec records the new images and goes on."""
    from ofasearch.cli import main
    from tests.data.test_imagefolder import COUNTS, _write, fashion_arrays

    images = _write(tmp_path / "images", fashion_arrays(), COUNTS)
    spec = {
        **SPEC,
        "name": "folder",
        "data": {"dataset": "imagefolder", "root": str(images), "image_size": 16},
        "pairs": [{"teacher": {**TEACHER, "recipe": {"epochs": 1, "batch_size": 64}}, "student": MIXER}],
        "optim": {**SPEC["optim"], "epochs": 1},
        "search": {"num_samples": 1, "baselines": []},
        "storage": str(tmp_path / "results"),
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["run", str(tmp_path / "spec.yaml"), "--num-cpus", "2"]) == 0
    folder = tmp_path / "results" / "folder"
    started = json.loads((folder / "state.json").read_text())["data"]
    assert started["files"] == 3 * sum(COUNTS.values())
    capsys.readouterr()

    (images / "train" / "boot" / "000.png").unlink()
    assert main(["resume", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: data.root {images}: its images changed since the search started ("), err
    assert len(err.splitlines()) == 1
    assert "--force-new-spec" in err
    assert json.loads((folder / "state.json").read_text())["data"] == started, "nothing recorded on a refusal"

    assert main(["resume", str(folder), "--force-new-spec"]) == 0
    assert json.loads((folder / "state.json").read_text())["data"]["files"] == started["files"] - 1
