"""Reading Ray Tune's own record: the error line a failed trial gets in ``trials.parquet``, and
trials whose files a full disk cut short."""

import json

from ofasearch.results.tune_folders import LOST_WORKER, last_error_line, read_experiment

# what Tune wrote for the trial on the node the multi-node test removes (str of the exception)
LOST = """Failure # 1 (occurred at 2026-11-26_23-16-43)
The actor 77e3b588 is unavailable: RpcError: Socket closed rpc_code: 14.
"""
CRASHED = """Failure # 1 (occurred at 2026-11-26_23-16-43)
ray.exceptions.WorkerCrashedError: The worker died unexpectedly while executing this task.
"""
RAISED = """Failure # 1 (occurred at 2026-11-26_23-16-43)
Traceback (most recent call last):
  File "trial.py", line 3, in train
    raise RuntimeError("CUDA out of memory")
RuntimeError: CUDA out of memory
"""


def test_the_error_line_is_the_exception_message():
    assert last_error_line(RAISED) == "RuntimeError: CUDA out of memory"
    assert last_error_line(None) == "trial failed"
    assert len(last_error_line("x" * 2000)) == 500


def test_a_lost_worker_or_node_says_so_first():
    message = "The actor 77e3b588 is unavailable: RpcError: Socket closed rpc_code: 14."
    assert last_error_line(LOST) == f"{LOST_WORKER}: {message}"
    assert last_error_line(CRASHED).startswith(f"{LOST_WORKER}: ray.exceptions.WorkerCrashedError: The worker")
    assert LOST_WORKER not in last_error_line(RAISED)


def test_a_trial_whose_params_a_full_disk_left_empty_is_read_from_its_results(tmp_path):
    """A baseline phase where the disk filled: the experiment state cut short (so the trial folders
    are read) and one trial's ``params.json`` empty; every line of its ``result.json`` carries
    the config, so the trial is still there for a rebuild (as a full-disk test once found it was not)."""
    phase = tmp_path / "baselines"
    phase.mkdir()
    (phase / "experiment_state-2026-12-07_00-35-40.json").write_text('{"trial_data": [["{\\"trial_id')
    points = {"64f637b1": {"baseline": "none", "optim.lr": 0.002}, "fdab93ed": {"baseline": "kd", "optim.lr": 0.002}}
    for n, (trial_id, point) in enumerate(points.items()):
        trial = phase / f"trial_{trial_id}_{n + 1}_baseline={point['baseline']}"
        trial.mkdir()
        lines = [{"epoch": e, "val_acc": 0.5, "trial_id": trial_id, "config": {"point": point}} for e in (1, 2)]
        (trial / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
        (trial / "params.json").write_text("" if trial_id == "64f637b1" else json.dumps({"point": point}))
    experiment = read_experiment(phase)
    assert experiment.role == "baseline"
    assert {t.trial_id: t.config for t in experiment.trials} == {k: {"point": v} for k, v in points.items()}
    assert all(len(t.results) == 2 for t in experiment.trials)
    (phase / "trial_64f637b1_1_baseline=none" / "params.json").write_text('{"point": {"basel')  # cut mid-write
    assert {t.trial_id for t in read_experiment(phase).trials} == set(points)
