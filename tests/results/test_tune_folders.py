"""Reading Ray Tune's own record: the error line a failed trial gets in ``trials.parquet``."""

from ofasearch.results.tune_folders import LOST_WORKER, last_error_line

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
