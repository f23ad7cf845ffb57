"""A complete copy of Tune's saved state of the search phase, put back when a write cut short
(a full disk) damaged it.

Tune copies its experiment state (``experiment_state-<session>.json``, ``search_gen_state-*``,
``searcher-state-*.pkl``) into the experiment folder every few seconds without a temporary file,
so a write that fails half-way (no space left) leaves a truncated file. On restore Tune then
logs "Failed to restore the run state" and silently *starts the search afresh* in the same
folder. :class:`StateKeeper` copies the set whenever all of it reads back complete, and
:func:`repair_saved_state` puts that copy back before a resume restores the search: trials that
ended after the copy run again, as after a kill.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

from ray import tune

from ofasearch.errors import FileFault
from ofasearch.results.tune_folders import newest_state_file
from ofasearch.utils.files import replace_dir

__all__ = ["KEPT_DIR", "StateKeeper", "repair_saved_state", "saved_state_files"]

logger = logging.getLogger(__name__)

KEPT_DIR = ".ofasearch-kept-state"  # inside the experiment folder: the last complete set
_SEARCHER_FILES = ("search_gen_state-{}.json", "searcher-state-{}.pkl")  # both pickles, whatever the name says


def saved_state_files(experiment: Path) -> list[Path]:
    """The newest set Tune restores from: its experiment state and the searcher's files of the
    same session ([] before Tune saved any)."""
    state = newest_state_file(experiment)
    if state is None:
        return []
    session = state.name.removeprefix("experiment_state-").removesuffix(".json")
    return [state, *(experiment / name.format(session) for name in _SEARCHER_FILES)]


def _damage(files: list[Path]) -> str | None:
    """Why the set cannot be restored (the first damaged file and its error); None when whole."""
    for path in files:
        try:
            data = path.read_bytes()
            json.loads(data) if path.name.startswith("experiment_state-") else pickle.loads(data)
        except FileNotFoundError:
            if path.name.startswith("experiment_state-"):
                return f"{path}: missing"
        except Exception as exc:  # any unpickling or decoding error: the file is cut short or garbage
            return f"{path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'damaged'}"
    return None


class StateKeeper(tune.Callback):
    """Keeps a copy of the search experiment's saved state each time Tune has written a complete
    one (checked at most every ``period_s``); the copy is replaced atomically, so it is always whole."""

    def __init__(self, experiment: str, period_s: float = 2.0):
        self.experiment, self.period_s = experiment, period_s
        self.last_check = 0.0
        self.kept: tuple[tuple[str, int], ...] = ()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "last_check": 0.0, "kept": ()}

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if time.monotonic() - self.last_check < self.period_s:
            return
        self.last_check = time.monotonic()
        try:
            self.keep()
        except OSError as exc:  # the copy is a safeguard: a full disk must fail the search elsewhere, not here
            logger.debug(f"could not keep a copy of Tune's saved state: {exc}")

    def keep(self) -> None:
        experiment = Path(self.experiment)
        files = [p for p in saved_state_files(experiment) if p.is_file()]
        stamp = tuple((p.name, p.stat().st_mtime_ns) for p in files)
        if not files or stamp == self.kept or _damage(files) is not None:
            return
        staging = experiment / f"{KEPT_DIR}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            for path in files:
                shutil.copy2(path, staging / path.name)
            if _damage([staging / p.name for p in files]) is None:  # it changed while being copied: next time
                replace_dir(staging, experiment / KEPT_DIR)
                self.kept = stamp
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def repair_saved_state(experiment: Path) -> None:
    """Before Tune restores ``experiment``: when its newest saved state is damaged, put the kept
    complete copy in its place (one warning); without a copy, a FileFault (Tune would silently
    start the search afresh)."""
    files = saved_state_files(experiment)
    problem = _damage(files) if files else None
    if problem is None:
        return
    kept = experiment / KEPT_DIR
    copies = sorted(kept.iterdir()) if kept.is_dir() else []
    if not copies or _damage(copies) is not None:
        raise FileFault(
            [
                f"{problem}: Ray Tune's saved state of the search is damaged (a write cut short, e.g. by a full "
                f"disk) and no complete copy was kept, so the search cannot be resumed; start it again with "
                f"ofasearch run"
            ]
        )
    for path in files:
        path.unlink(missing_ok=True)
    for copy in copies:
        shutil.copy2(copy, experiment / copy.name)
    saved_at = time.strftime("%H:%M:%S", time.localtime(copies[0].stat().st_mtime))
    logger.warning(
        f"{problem}: Ray Tune's saved state of the search was damaged (a write cut short, e.g. by a full disk); "
        f"resuming from its last complete copy (saved {saved_at}): trials that ended after it run again"
    )
