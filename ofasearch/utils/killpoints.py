"""Named points where a test can make the search driver die as ``kill -9`` would kill it, or get
a Ctrl-C.

``ofasearch resume`` must finish a search killed or interrupted at any moment; the tests choose
the moments (each phase, the hand-over between phases, a trial's start) by name instead of by
timing: a driver started with ``OFASEARCH_TEST_KILL_AT=<name>`` sends itself SIGKILL when it
reaches that point, one started with ``OFASEARCH_TEST_INTERRUPT_AT=<name>`` SIGINT (what Ctrl-C
in its terminal sends it). Unset (as for every user), a point costs two environment lookups.
"""

from __future__ import annotations

import os
import signal

__all__ = ["INTERRUPT_AT_VAR", "KILL_AT_VAR", "kill_point"]

KILL_AT_VAR = "OFASEARCH_TEST_KILL_AT"
INTERRUPT_AT_VAR = "OFASEARCH_TEST_INTERRUPT_AT"


def kill_point(name: str) -> None:
    """SIGKILL this process if ``$OFASEARCH_TEST_KILL_AT`` names this point, SIGINT it if
    ``$OFASEARCH_TEST_INTERRUPT_AT`` does (tests only)."""
    if os.environ.get(KILL_AT_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(INTERRUPT_AT_VAR) == name:
        os.kill(os.getpid(), signal.SIGINT)
