"""Holding a results folder for one driver: a second holder (another process) is refused in one
line naming the first; the lock goes with its process, however that process ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from ofasearch.errors import SpecError
from ofasearch.utils.claims import DRIVER_LOCK, hold_folder

# a second driver, in its own process: prints what it got
SECOND = """
import sys
from pathlib import Path
from ofasearch.errors import SpecError
from ofasearch.utils.claims import hold_folder
try:
    with hold_folder(Path(sys.argv[1]), "second"):
        print("held")
except SpecError as exc:
    print(exc.problems[0])
"""
# a driver that holds the folder until it is killed
HOLDER = """
import sys, time
from pathlib import Path
from ofasearch.utils.claims import hold_folder
with hold_folder(Path(sys.argv[1]), "ofasearch resume here"):
    print("holding", flush=True)
    time.sleep(600)
"""


def _second(folder) -> str:
    return subprocess.run([sys.executable, "-c", SECOND, str(folder)], capture_output=True, text=True).stdout.strip()


def test_a_second_driver_is_refused_naming_the_first(tmp_path):
    with hold_folder(tmp_path, "ofasearch run (results here)"):
        line = _second(tmp_path)
        assert line.startswith(f"{tmp_path}: another driver (pid ")
        assert "`ofasearch run (results here)`, since " in line
        assert line.endswith("drives this search; wait for it to end, or stop it first")
    assert _second(tmp_path) == "held", "released when the block ends"


def test_an_exception_in_the_block_releases_the_folder(tmp_path):
    with pytest.raises(SpecError), hold_folder(tmp_path, "first"):
        raise SpecError(["bad input"])
    assert _second(tmp_path) == "held"


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_holder_leaves_no_stale_lock(tmp_path, signum):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    assert "`ofasearch resume here`" in _second(tmp_path)
    holder.send_signal(signum)
    holder.wait(timeout=30)
    assert (tmp_path / DRIVER_LOCK).exists(), "the file stays; the kernel's lock went with the process"
    deadline = time.monotonic() + 10
    while (line := _second(tmp_path)) != "held" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert line == "held"
