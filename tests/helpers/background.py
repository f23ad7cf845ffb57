"""A search driven from another process, as a user's terminal runs it: to kill or interrupt it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ofasearch.results.tables import TRIALS_FILE, read_rows
from ofasearch.results.tune_folders import read_experiment
from ofasearch.utils.storage import Location, as_location


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_search(
    tmp: Path, spec: dict[str, Any], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, Location]:
    """``ofasearch run`` of ``spec`` in a child process (``env`` added to its environment; its
    output in ``tmp/driver.log``); returns it and the results folder (a path, or a folder on an
    object store)."""
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    with (tmp / "driver.log").open("a") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "ofasearch.cli", "run", "spec.yaml", "--num-cpus", "2"],
            cwd=tmp,
            env={**os.environ, **(env or {})},
            # Ctrl-C works as in a terminal even when this process inherited SIGINT ignored (a
            # background job without job control): a child would keep it ignored, and Python
            # then never raises KeyboardInterrupt
            preexec_fn=_default_sigint,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return driver, as_location(spec["storage"]) / spec["name"]


def table_rows(folder: Location) -> list[dict[str, Any]]:
    """``trials.parquet`` as rows ([] before it exists), read as ``status`` reads it: every read
    must succeed mid-search."""
    return read_rows(folder / TRIALS_FILE)


def saved_as_finished(folder: Path, statuses: tuple[str, ...] = ("TERMINATED",)) -> set[str]:
    """The search trials whose status in Tune's saved state (what a resume restores) is one of
    ``statuses``; a damaged state raises ``ValueError``, as it would for the resume."""
    return {t.trial_id for t in read_experiment(folder / "search").trials if t.status in statuses}


def wait_for(driver: subprocess.Popen, condition: Callable[[], bool], what: str, timeout_s: float = 300) -> None:
    """Poll ``condition`` while the search runs; fail if it ends or times out first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert driver.poll() is None, f"the search ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s"
        time.sleep(0.5)


def run_driver(cwd: Path, args: list[str], env: dict[str, str] | None = None, timeout_s: float = 600) -> int:
    """``ofasearch ARGS`` in a child process with ``env`` added, to its end; returns its exit
    status (-9: it was killed by SIGKILL). Its output goes to ``cwd/driver.log``."""
    with (cwd / "driver.log").open("a") as log:
        return subprocess.run(
            [sys.executable, "-m", "ofasearch.cli", *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
        ).returncode
