"""``ofasearch rebuild DIR``: recreate ``trials.parquet`` and ``epochs.parquet`` from Ray Tune's
own experiment folders, after they were deleted or damaged.

Tune's folders hold everything the recorder saw (see :mod:`ofasearch.results.tune_folders`), so
the rows are made by replaying it through the recorder's own :class:`ResultTables`: each trial
started, each line of its ``result.json`` reported (a re-run after a resume shows as its epochs
starting again), and its end as Tune saved it (``TERMINATED`` or ``ERROR`` with ``error.txt``).
Phases are replayed in the order they ran, and a resumed grid phase drops the unfinished rows of
the one before it, as the recorder does.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ofasearch.errors import FileFault, SpecError
from ofasearch.results.folder import load_folder_spec
from ofasearch.results.tables import EPOCHS_FILE, TRIALS_FILE, read_rows
from ofasearch.results.tune_folders import TuneExperiment, TuneTrial, last_error_line, read_experiments
from ofasearch.search.recorder import ResultTables, trial_params
from ofasearch.search.space import SearchSpace
from ofasearch.search.state import read_state
from ofasearch.utils.storage import Location, ObjectPath

__all__ = ["Rebuilt", "rebuild", "rebuild_tables", "tables_to_rebuild"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild wrote: the tables (file names), and their row counts."""

    written: tuple[str, ...]
    trials: int
    epochs: int
    experiments: tuple[str, ...]  # Tune experiment folders read
    # trials the recorder saw end but whose end (or results) Tune had not saved to the folder
    # when a fault stopped the run, and that the resume kept instead of re-running: their rows
    # live only in the recorded tables
    unrecovered: tuple[str, ...] = ()


def tables_to_rebuild(folder: Path) -> tuple[str, ...]:
    """The tables of ``folder`` that are missing or cannot be read."""
    needed = []
    for name in (TRIALS_FILE, EPOCHS_FILE):
        try:
            if not (folder / name).is_file():
                needed.append(name)
            else:
                read_rows(folder / name)
        except FileFault:
            needed.append(name)
    return tuple(needed)


def _replay(tables: ResultTables, trial: TuneTrial) -> None:
    """Feed one trial to the tables as the recorder's Tune callback would have."""
    if trial.status == "PENDING" and not trial.results:
        return  # never started: the recorder has no row for it
    params = trial_params(trial.config)
    tables.on_start(trial.trial_id, params)
    last_epoch = None
    for result in trial.results:
        epoch = int(result.get("epoch", 0))
        if last_epoch is not None and epoch <= last_epoch:
            tables.on_start(trial.trial_id, params)  # a resume re-ran it from epoch 0
        tables.on_result(trial.trial_id, params, result)
        last_epoch = epoch
    status = trial.status if trial.status in ("TERMINATED", "ERROR") else _status_from_folder(trial, tables.max_epochs)
    if status == "TERMINATED":
        tables.on_end(trial.trial_id, params)
    elif status == "ERROR":
        tables.on_end(trial.trial_id, params, error=last_error_line(trial.error))


def _status_from_folder(trial: TuneTrial, max_epochs: int) -> str:
    """How a trial Tune last saved as running (or never saved: a kill before its first save)
    ended, from its folder, as the recorder saw it end after that save: an error file means it
    failed; the full budget, a divergence or a result the scheduler marked ``done`` (ASHA's stop),
    that it ended; else it was cut short (running)."""
    if trial.error is not None:
        return "ERROR"
    last = trial.results[-1] if trial.results else {}
    ended = int(last.get("epoch", 0)) >= max_epochs or last.get("diverged") or last.get("done")
    return "TERMINATED" if ended else "RUNNING"


def _read_experiments(folder: Path) -> list[TuneExperiment]:
    try:
        experiments = read_experiments(folder)
    except (ValueError, KeyError, TypeError) as exc:
        raise FileFault(
            [
                f"{folder}: a Ray Tune experiment state file cannot be read ({type(exc).__name__}: {exc}); "
                "restore the folder from a copy"
            ]
        ) from None
    if not experiments:
        raise FileFault(
            [f"{folder}: no Ray Tune experiment folders (search/, baselines/, confirm/) to rebuild the tables from"]
        )
    return experiments


def rebuild_tables(folder: Path, *, force: bool = False) -> Rebuilt:
    """Rebuild the tables of ``folder`` that are missing or damaged (``force``: both) from Tune's
    experiment folders; readable tables are left as they are unless ``force``."""
    folder = Path(folder).resolve()
    spec = load_folder_spec(folder)  # a SpecError when it is not a results folder
    names = (TRIALS_FILE, EPOCHS_FILE) if force else tables_to_rebuild(folder)
    if not names:
        return Rebuilt((), 0, 0, ())
    stages = read_state(folder).get("stages")
    if stages is None:
        raise FileFault([f"{folder / 'state.json'}: missing or without the students' stages; restore it from a copy"])
    experiments = _read_experiments(folder)
    tables = ResultTables(folder, SearchSpace(spec, stages), load=False, autosave=False)
    # rows Tune's record may lack (see Rebuilt.unrecovered): trial id -> (experiment index, point)
    lacking: dict[str, tuple[int, str]] = {}
    origin: dict[str, tuple[int, str]] = {}  # every replayed trial's experiment index and point
    for index, experiment in enumerate(experiments):
        # as the recorder's first step in each Tuner: a fresh grid Tuner (baselines-2) drops the
        # unfinished rows of the one before, a fresh search Tuner (search-2) every earlier row
        ids = {t.trial_id for t in experiment.trials}
        for trial_id in tables.keep_only(experiment.role, ids, keep_finished=experiment.role != "search"):
            lacking[trial_id] = origin[trial_id]
        for trial in experiment.trials:
            origin[trial.trial_id] = (index, _point_key(trial))
            if trial.status == "TERMINATED" and not trial.results:
                # saved as ended, its results never reached the storage (a fault): no row to make
                lacking[trial.trial_id] = origin[trial.trial_id]
                continue
            _replay(tables, trial)
    unrecovered = [t for t, (i, point) in lacking.items() if not _run_again(experiments, i, point)]
    tables.write(names)
    return Rebuilt(
        names,
        len(tables.trials),
        len(tables.epochs),
        tuple(e.path.name for e in experiments),
        tuple(sorted(unrecovered)),
    )


def _run_again(experiments: list[TuneExperiment], index: int, point: str) -> bool:
    """Whether a later Tuner of the same phase ran this trial again, as a resume does with a trial
    the recorder had not seen end: a grid point re-run (baselines-2...), or a search started over
    (search-2). Otherwise the recorder kept the trial's row and Tune's record lacks it."""
    role = experiments[index].role
    for later in experiments[index + 1 :]:
        if later.role == role and (role == "search" or point in {_point_key(t) for t in later.trials}):
            return True
    return False


def _point_key(trial: TuneTrial) -> str:
    """A grid trial's point (its config), comparable across the Tuners of a resumed phase."""
    return json.dumps(trial.config.get("point", trial.config), sort_keys=True, default=str)


# what a rebuild reads of a folder on an object store: its own files and, in each phase's Tune
# experiment, the state files and each trial's params, results and error (not its checkpoints)
_TOP_FILES = ("spec.yaml", "state.json", TRIALS_FILE, EPOCHS_FILE)
_TUNE_RECORD = re.compile(r"^(search|baselines|confirm)(-\d+)?/(experiment_state-[^/]*\.json|trial_[^/]+/[^/]+)$")


def rebuild(folder: Location, *, force: bool = False) -> Rebuilt:
    """:func:`rebuild_tables` of a folder on a file system or an object store. On an object store
    Tune's record (a few kB per trial) is copied to a temporary local folder, the tables are
    rebuilt there and uploaded (one PUT each); errors name the bucket's paths."""
    if not isinstance(folder, ObjectPath):
        return rebuild_tables(Path(folder), force=force)
    if not (folder / "spec.yaml").is_file():
        raise SpecError([f"{folder}: not an ofasearch results folder (no spec.yaml)"])
    with tempfile.TemporaryDirectory(prefix="ofasearch-rebuild-") as tmp:
        local = Path(tmp) / folder.name
        _download_record(folder, local)
        try:
            done = rebuild_tables(local, force=force)
        except (FileFault, SpecError) as exc:
            raise type(exc)([p.replace(str(local), str(folder)) for p in exc.problems]) from None
        for name in done.written:
            (folder / name).write_bytes((local / name).read_bytes())
    return done


def _download_record(folder: ObjectPath, local: Path) -> None:
    """Copy what :func:`rebuild_tables` reads of ``folder`` to ``local``."""
    import pyarrow.fs

    selector = pyarrow.fs.FileSelector(folder.fs_path, recursive=True)
    for info in folder.fs.get_file_info(selector):
        if info.type != pyarrow.fs.FileType.File:
            continue
        relative = str(PurePosixPath(info.path).relative_to(folder.fs_path))
        if relative in _TOP_FILES or _TUNE_RECORD.match(relative):
            target = local / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((folder / relative).read_bytes())
