"""Named points where a test can make the search driver die as ``kill -9`` would kill it.

``ofasearch resume`` must finish a search killed at any moment; the tests choose the moments
(each phase, and the hand-over between phases) by name instead of by timing: a driver started
with ``OFASEARCH_TEST_KILL_AT=<name>`` sends itself SIGKILL when it reaches that point. Unset (as
for every user), a kill point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["KILL_AT_VAR", "kill_point"]

KILL_AT_VAR = "OFASEARCH_TEST_KILL_AT"


def kill_point(name: str) -> None:
    """SIGKILL this process if ``$OFASEARCH_TEST_KILL_AT`` names this point (tests only)."""
    if os.environ.get(KILL_AT_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
