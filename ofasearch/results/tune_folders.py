"""Ray Tune's own record of a search's trials, read as plain files (no Ray): what ``ofasearch
rebuild`` recreates the tables from, and what tells a deleted table from a search that has not
started a trial yet.

Each phase's Tuner writes ``<folder>/<phase>[-N]/`` (``search``, ``baselines``, ``confirm``; a
resumed grid phase runs in ``baselines-2``...): ``experiment_state-<time>.json``, the newest of
which lists every trial Tune knows (id, status, folder, config, the name of its error file), and
one folder per trial with ``params.json`` (its config), ``result.json`` (one JSON object per
reported result, appended, also when a resume re-runs the trial) and, when it failed,
``error.txt`` (each failure's traceback, appended).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "LOST_WORKER",
    "NOT_SAVED",
    "TuneExperiment",
    "TuneTrial",
    "experiment_folders",
    "last_error_line",
    "newest_state_file",
    "read_experiment",
    "read_experiments",
    "read_state_trials",
    "started_trials",
]

ROLES = {"search": "search", "baselines": "baseline", "confirm": "confirm"}  # experiment folder -> role
_EXPERIMENT = re.compile(r"^(search|baselines|confirm)(?:-(\d+))?$")
_STATE_FILES = "experiment_state-*.json"
NOT_SAVED = "NOT_SAVED"  # status of a trial whose folder exists but Tune saved no state (a kill before its first save)


@dataclass
class TuneTrial:
    """One trial as Tune recorded it."""

    trial_id: str
    status: str  # Tune's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR (or NOT_SAVED)
    config: dict[str, Any]  # the trial's config as Tune passed it (grid phases: {"point": {...}})
    results: list[dict[str, Any]] = field(default_factory=list)  # result.json, in order
    error: str | None = None  # error.txt
    start_time: float = 0.0


@dataclass
class TuneExperiment:
    """One Tune experiment folder of a phase, with its trials in the order they started."""

    path: Path
    role: str  # "search", "baseline" or "confirm": the recorder's role of its trials
    trials: list[TuneTrial]
    state_file: Path | None  # the newest experiment_state-*.json (None: Tune saved none)


def _experiment_key(path: Path) -> tuple[int, int]:
    match = _EXPERIMENT.match(path.name)
    assert match is not None
    return list(ROLES).index(match.group(1)), int(match.group(2) or 1)


def experiment_folders(folder: Any) -> list[Path]:
    """The phase experiment folders of a results folder, in the order the phases ran; [] on an
    object store (Tune's folders are read on a local file system only)."""
    if not isinstance(folder, Path) or not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _EXPERIMENT.match(p.name)]
    return sorted(found, key=_experiment_key)


def newest_state_file(experiment: Any) -> Path | None:
    """The experiment state Tune restores from: the newest ``experiment_state-<time>.json``
    (Tune picks the greatest name, as here); None on an object store (not read there)."""
    if not isinstance(experiment, Path):
        return None
    files = sorted(experiment.glob(_STATE_FILES), key=lambda p: p.name)
    return files[-1] if files else None


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    """``result.json``: one object per line; a line cut short by a crash is skipped."""
    rows = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, IsADirectoryError):
        return None


def read_state_trials(state_file: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(trial state, run metadata) of each trial in an experiment state file; a damaged file
    raises ``json.JSONDecodeError`` (or ValueError)."""
    data = json.loads(state_file.read_text())
    return [(json.loads(state), json.loads(meta)) for state, meta in data["trial_data"]]


def _trial_from_state(experiment: Path, state: dict[str, Any], meta: dict[str, Any]) -> TuneTrial:
    trial_dir = experiment / state["relative_logdir"]
    error_name = meta.get("error_filename")
    return TuneTrial(
        trial_id=state["trial_id"],
        status=state["status"],
        config=state.get("config") or {},
        results=_read_json_lines(trial_dir / "result.json"),
        error=_read_text(trial_dir / error_name) if error_name else None,
        start_time=float(meta.get("start_time") or 0.0),
    )


def _trial_from_folder(trial_dir: Path) -> TuneTrial | None:
    """A trial folder without a saved state (Tune was killed before it saved one). Its config is
    ``params.json``, or, where a full disk left that empty or cut short, the copy every line of
    its ``result.json`` carries; None for a folder with neither (the trial never reported)."""
    results = _read_json_lines(trial_dir / "result.json")
    try:
        config = json.loads(_read_text(trial_dir / "params.json") or "null")
    except ValueError:
        config = None
    if not isinstance(config, dict):
        config = next((r["config"] for r in results if isinstance(r.get("config"), dict)), None)
    if not isinstance(config, dict):
        return None
    trial_id = results[0].get("trial_id") if results else trial_dir.name.split("_")[1]
    error = _read_text(trial_dir / "error.txt")
    start = float(results[0].get("timestamp", 0)) if results else trial_dir.stat().st_mtime
    return TuneTrial(str(trial_id), NOT_SAVED, config, results, error, start)


def read_experiment(path: Path) -> TuneExperiment:
    """The trials of one experiment folder. Without a saved state its trial folders are read
    as they are. A damaged state file raises ``ValueError`` for the search (which restores from
    it); a grid phase (baselines, confirm) never restores from its state, so a state file a full
    disk cut short there counts as none saved."""
    role = ROLES[_EXPERIMENT.match(path.name).group(1)]  # type: ignore[union-attr]
    state_file = newest_state_file(path)
    saved = None
    if state_file is not None:
        try:
            saved = read_state_trials(state_file)
        except (ValueError, KeyError, TypeError):
            if role == "search":
                raise
    if saved is None:
        trials = [t for d in sorted(path.glob("trial_*")) if d.is_dir() and (t := _trial_from_folder(d))]
    else:
        trials = [_trial_from_state(path, state, meta) for state, meta in saved]
    trials.sort(key=lambda t: t.start_time)
    return TuneExperiment(path, role, trials, state_file)


def read_experiments(folder: Path) -> list[TuneExperiment]:
    """Every phase experiment of a results folder, in the order they ran."""
    return [read_experiment(path) for path in experiment_folders(folder)]


def started_trials(folder: Path) -> int:
    """How many trials Tune's folders show as started (0 before the first trial): a search with
    trials has a ``trials.parquet``, so a missing one was deleted. Never raises: a state file
    being rewritten counts by its trial folders."""
    count = 0
    for path in experiment_folders(folder):
        try:
            count += sum(1 for t in read_experiment(path).trials if t.status != "PENDING")
        except (ValueError, KeyError, TypeError, OSError):
            count += sum(1 for d in path.glob("trial_*") if (d / "result.json").is_file())
    return count


# Ray's errors for a trial whose worker process or node went away (a node crashed or was removed,
# the worker was killed, e.g. by Ray's memory monitor): the trial's code did not fail. Tune writes
# such an error as its message alone (``str(exc)``), so the messages are matched too
_LOST_WORKER = re.compile(
    r"ActorDiedError|ActorUnavailableError|NodeDiedError|WorkerCrashedError"
    r"|The actor \S+ is unavailable|The actor died|The actor is dead|The worker died unexpectedly"
)
LOST_WORKER = "its Ray worker or node was lost"


def last_error_line(text: str | None) -> str:
    """The last line of a failed trial's error file that is not part of a traceback's body (the
    exception message): what ``trials.parquet`` records as the trial's error. A lost worker or
    node says so first: Ray's own message ("The actor ... is unavailable") does not."""
    lines = [line for line in (text or "").strip().splitlines() if line and not line.startswith(" ")]
    line = lines[-1] if lines else "trial failed"
    if _LOST_WORKER.search(text or ""):
        line = f"{LOST_WORKER}: {line}"
    return line[:500]
