"""Named points where a test can make the search driver die as ``kill -9`` would kill it, or get
a Ctrl-C.

``ofasearch resume`` must finish a search killed or interrupted at any moment; the tests choose
the moments (each phase, the hand-over between phases, a trial's start) by name instead of by
timing: a driver started with ``OFASEARCH_TEST_KILL_AT=<name>`` sends itself SIGKILL when it
reaches that point, one started with ``OFASEARCH_TEST_INTERRUPT_AT=<name>`` SIGINT (what Ctrl-C
in its terminal sends it), one with ``OFASEARCH_TEST_TERMINATE_AT=<name>`` SIGTERM (what Slurm,
Kubernetes or a spot instance's shutdown sends before it kills); ``OFASEARCH_TEST_HANG_AT=<name>``
makes the process that reaches it sleep for ever there (a step stuck on a dead mount). Unset (as
for every user), a point costs four environment lookups.
"""

from __future__ import annotations

import os
import signal
import time

__all__ = ["HANG_AT_VAR", "INTERRUPT_AT_VAR", "KILL_AT_VAR", "TERMINATE_AT_VAR", "kill_point"]

KILL_AT_VAR = "OFASEARCH_TEST_KILL_AT"
INTERRUPT_AT_VAR = "OFASEARCH_TEST_INTERRUPT_AT"
TERMINATE_AT_VAR = "OFASEARCH_TEST_TERMINATE_AT"
HANG_AT_VAR = "OFASEARCH_TEST_HANG_AT"
_SIGNALS = {KILL_AT_VAR: signal.SIGKILL, INTERRUPT_AT_VAR: signal.SIGINT, TERMINATE_AT_VAR: signal.SIGTERM}


def kill_point(name: str) -> None:
    """Send this process the signal whose variable names this point, or hang here (tests only)."""
    for var, signum in _SIGNALS.items():
        if os.environ.get(var) == name:
            os.kill(os.getpid(), signum)
    while os.environ.get(HANG_AT_VAR) == name:
        time.sleep(3600)
