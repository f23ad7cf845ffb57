"""``ofasearch run/resume``: Ray Tune + Optuna TPE + ASHA over OFA-KD compositions.

Flow: validate and *plan* (load the data, build each pair once to measure the students' stages)
-> prepare teachers (:mod:`.teachers`: auto-trained once, before any trial) -> the baselines (a
full-budget grid, :mod:`.grids`) -> the search Tuner (:class:`OptunaSearcher` over the
define-by-run space, paper defaults first, the baselines already in its study; ASHA on ``epoch``)
-> with ``search.confirm``, the confirmation runs (a grid never shown to Optuna) -> ``best.yaml``,
the best of every candidate, and a summary with intervals. The experiment folder holds
everything ``resume`` needs; ``state.json`` says which :class:`Phase` a search is in.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune

from ofasearch.cluster.capacity import check_fits
from ofasearch.cluster.ray_session import ray_session, stop_abandoned_instances
from ofasearch.config import Spec, load_spec, parse_spec
from ofasearch.data import data_fingerprint
from ofasearch.results.export import write_best
from ofasearch.results.folder import SPEC_FILE, load_folder_spec, read_tables
from ofasearch.results.summary import summary_lines
from ofasearch.results.tables import TRIALS_FILE, read_rows
from ofasearch.search.claim import check_claimable, claim_folder, fresh_folder
from ofasearch.search.grids import baseline_points, confirm_points, confirm_seeds, not_finished
from ofasearch.search.packing import PROVISIONAL_GPUS, pack_trials, unmeasured_packing, with_gpus
from ofasearch.search.plan import plan
from ofasearch.search.progress import ProgressView
from ofasearch.search.recorder import Recorder, trial_params
from ofasearch.search.resume_checks import SPEC_HASH_KEY, check_same_data, spec_hash_to_record
from ofasearch.search.searcher import (
    METRIC,
    STUDY_FILE,
    OptunaSearcher,
    PointsSearcher,
    build_scheduler,
    build_searcher,
)
from ofasearch.search.space import SearchSpace
from ofasearch.search.state import Phase, read_state, update_state
from ofasearch.search.teacher_prep import confirm_caches, prepare_teachers, ship_teachers
from ofasearch.search.tracking import check_mlflow, mlflow_callback, mlflow_environment, recorded_tracking_uri
from ofasearch.search.trial import (
    backend_for,
    run_trial,
    trial_resources,
)
from ofasearch.search.tune_state import StateKeeper, repair_saved_state
from ofasearch.search.warm_start import tell_baselines, warm_start
from ofasearch.utils.claims import hold_folder
from ofasearch.utils.faults import note_results_folder
from ofasearch.utils.killpoints import kill_point
from ofasearch.utils.storage import Location, ObjectPath, as_location, location_digest, ray_storage, redact_uri
from ofasearch.utils.versions import package_versions

__all__ = [
    "SearchInterrupted",
    "load_and_run",
    "resume_search",
    "run_search",
]

logger = logging.getLogger(__name__)

# Tune saves its experiment state (trial statuses, searcher) at most this often; a killed driver
# loses at most this much: trials finished since then re-run on resume.
TUNE_STATE_PERIOD_S = 2


def _trainable(spec: Spec, space: SearchSpace, teachers: list[dict[str, Any]], folder: Location) -> Callable:
    """The Tune function trainable of every trial (search and baselines), with its resources. The
    teachers' files travel in Ray's object store (``tune.with_parameters``), so a trial on any
    node gets them without a shared disk."""

    def trial(config: dict[str, Any], files: dict[str, Any]) -> None:
        run_trial(
            trial_params(config),
            spec=spec_data,
            stages=stages,
            teachers=teachers,
            train_storage=train_storage,
            files=files,
        )

    spec_data = spec.model_dump(mode="json")
    stages, train_storage = space.available_stages, str(folder / "train_runs")
    resources = {k: v for k, v in trial_resources(spec.resources).items() if v > 0}
    return tune.with_resources(tune.with_parameters(trial, files=ship_teachers(teachers)), resources)


def run_search(
    spec: Spec,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    dry_run: bool = False,
    verbose: int = 0,
    next_free_name: bool = False,
    mlflow: str | None = None,
) -> Location:
    """Run the whole search; returns the experiment folder ``<storage>/<name>`` (a path, or a
    folder on an object store when ``storage`` is a URI such as ``s3://bucket/prefix``). A folder that
    already holds a search is never touched: with ``next_free_name`` this one goes to ``name-2``
    (``-3``...), without it that is a SpecError. ``mlflow``: a tracking URI every trial is
    logged to (kept in ``state.json``, so a resume logs there too)."""
    check_mlflow(mlflow)
    storage = as_location(spec.storage)
    space = plan(spec)
    spec = space.spec  # without the pairs whose students miss search.constraints
    if dry_run:
        folder = fresh_folder(storage, spec.name) if next_free_name else storage / spec.name
        check_claimable(folder)
        if folder.name != spec.name:
            logger.info(f"{storage / spec.name} holds an earlier search; this one: {folder}")
        logger.info(
            f"dry run: {spec.search.num_samples} trials over {len(space.pairs)} pair(s); results would go to {folder}"
        )
        return folder
    # spec.yaml never holds the storage URI's credentials (redact_uri): run again, it takes them
    # from the environment (AWS_* for S3), as object stores normally do
    folder = claim_folder(
        storage,
        spec.name,
        lambda name: spec.model_copy(update={"name": name, "storage": redact_uri(spec.storage)}).to_yaml(),
        numbered=next_free_name,
    )
    spec = spec.model_copy(update={"name": folder.name})
    note_results_folder(folder)
    with hold_folder(folder, f"ofasearch run (results {folder})"):
        return _start(spec, space, folder, address=address, num_cpus=num_cpus, verbose=verbose, mlflow=mlflow)


def _start(
    spec: Spec,
    space: SearchSpace,
    folder: Location,
    *,
    address: str | None,
    num_cpus: int | None,
    verbose: int,
    mlflow: str | None,
) -> Location:
    """:func:`run_search` once the new folder is claimed and held by this driver."""
    fingerprint = data_fingerprint(spec.data)
    update_state(
        folder,
        phase=Phase.TEACHERS,
        data=fingerprint.as_dict() if fingerprint else None,  # a resume checks the images are the same
        phases=[p.value for p in _phases(spec)],
        **{SPEC_HASH_KEY: location_digest(folder / SPEC_FILE)},
        stages=space.available_stages,
        address=address,
        num_cpus=num_cpus,
        started_at=time.time(),
        mlflow=recorded_tracking_uri(mlflow) if mlflow else None,
        versions=package_versions(),  # ofasearch, torch, timm, ray, optuna that ran it
    )
    return _execute(spec, space, folder, address=address, num_cpus=num_cpus, verbose=verbose)


def _phases(spec: Spec) -> list[Phase]:
    """The phases this spec runs, in order: the baselines first, so the search's study starts
    from what they reached (:func:`ofasearch.search.warm_start.tell_baselines`)."""
    order = [Phase.BASELINES] if spec.search.baselines else []
    order += [Phase.SEARCH]
    order += [Phase.CONFIRM] if spec.search.confirm else []
    return [*order, Phase.DONE]


def _phase_order(spec: Spec, state: dict[str, Any]) -> list[Phase]:
    """The order this folder's search runs its phases in: as recorded when it started (searches of
    earlier versions ran the search before the baselines and recorded none)."""
    if "phases" in state:
        return [Phase(p) for p in state["phases"]]
    legacy = [Phase.SEARCH] + ([Phase.BASELINES] if spec.search.baselines else [])
    return [*legacy, *([Phase.CONFIRM] if spec.search.confirm else []), Phase.DONE]


def _execute(
    spec: Spec,
    space: SearchSpace,
    folder: Location,
    *,
    address: str | None,
    num_cpus: int | None,
    verbose: int,
    restore: bool = False,
) -> Location:
    """Run the phases the folder has not finished yet (all of them for a new search). Ctrl-C at
    any moment (teachers, a Tuner, between phases) stops it as :class:`SearchInterrupted`: no
    later phase starts, and ``resume`` continues from the phase it was in."""
    # leaves Ray at the end: stops a local instance ofasearch started unless another run uses it
    with ray_session(address, num_cpus, worker_output=bool(verbose)):
        packed = spec.resources.gpus_per_worker != "auto"
        if not packed:
            packing = unmeasured_packing(spec, ray.cluster_resources().get("GPU", 0.0))
            space = with_gpus(space, packing.gpus_per_worker if packing else PROVISIONAL_GPUS)
            spec, packed = space.spec, packing is not None
            if packing is not None:
                logger.info(packing.line)
        res = spec.resources  # checked before teachers are trained: a trial too big fails in seconds
        check_fits({"CPU": res.cpus_per_worker, "GPU": res.gpus()}, res.workers_per_trial, "resources")
        try:
            _run_phases(spec, space, folder, verbose=verbose, restore=restore, packed=packed)
        except SearchInterrupted:
            raise
        except KeyboardInterrupt:
            raise SearchInterrupted(folder) from None
    return _finish(spec, folder)


def _run_phases(
    spec: Spec, space: SearchSpace, folder: Location, *, verbose: int, restore: bool, packed: bool = True
) -> None:
    """``packed``: False while ``resources.gpus_per_worker: auto`` still needs its measurement, which
    runs once the teachers are ready (a resume reads the one recorded)."""
    state = read_state(folder)
    # Also on resume: a stored teacher or logit cache is verified (checksums) and rebuilt if it
    # was damaged since; an intact one costs a hash per file.
    teachers = prepare_teachers(spec, space, folder)
    if not packed:
        packing = pack_trials(spec, space, teachers, ship_teachers(teachers), folder)
        logger.info(packing.line)
        space = with_gpus(space, packing.gpus_per_worker)
        spec = space.spec
    kill_point("teachers")  # the teachers are ready, state.json still says `teachers`
    order = _phase_order(spec, state)
    phase = state["phase"] if restore else order[0]
    update_state(folder, teachers=teachers, phase=order[0] if phase is Phase.TEACHERS else phase)
    mlflow = read_state(folder).get("mlflow")  # a tracking URI: every phase's trials are logged there
    with _tune_settings(verbose), mlflow_environment(mlflow):
        for phase, following in zip(order, order[1:], strict=False):
            if read_state(folder)["phase"] is not phase:
                continue
            if phase is Phase.CONFIRM:
                confirm_caches(spec, space, teachers, confirm_seeds(spec))
                update_state(folder, teachers=teachers)
            trainable = _trainable(spec, space, teachers, folder)
            tuner, expected = _tuner(
                phase, spec, space, folder, trainable, verbose=verbose, restore=restore, mlflow=mlflow
            )
            if tuner is not None:
                _fit_or_interrupt(tuner, expected, folder)
            kill_point(f"{phase.value}-done")  # every trial of the phase ended, the next not begun
            update_state(folder, phase=following)
    kill_point("done")  # state.json says done; Ray not left yet, best.yaml not written


def _tuner(
    phase: Phase,
    spec: Spec,
    space: SearchSpace,
    folder: Location,
    trainable: Callable,
    *,
    verbose: int,
    restore: bool,
    mlflow: str | None = None,
) -> tuple[tune.Tuner | None, int]:
    """The Tuner of ``phase`` and the number of trials it must end (None: nothing left to run).

    The search is restored from Tune's saved state (its searcher has learned from the trials so
    far). Baselines and confirmation are fixed grids: a resume runs the points that have no
    finished row in ``trials.parquet``, in a fresh Tuner, so a kill at any moment (even before
    Tune saved anything) resumes to every point exactly once."""
    searching = phase is Phase.SEARCH
    role = {Phase.SEARCH: "search", Phase.BASELINES: "baseline", Phase.CONFIRM: "confirm"}[phase]
    if searching:
        expected = spec.search.num_samples
        path, fs = ray_storage(folder / phase.value)
        if restore and tune.Tuner.can_restore(path, storage_filesystem=fs):
            repair_saved_state(folder / phase.value)  # a full disk may have cut Tune's last save short
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, storage_filesystem=fs)
            return tuner, expected
    else:
        if phase is Phase.CONFIRM:
            points = confirm_points(spec, folder)
        else:
            points = baseline_points(space)
        points = not_finished(space, points, read_rows(folder / TRIALS_FILE), role)
        expected = len(points)
        if not points:
            return None, 0
    max_epochs = spec.optim.epochs
    spec_data = spec.model_dump(mode="json")
    recorder = Recorder(str(folder), spec_data, space.available_stages, role, keep_finished=not searching)
    callbacks: list[tune.Callback] = [recorder]
    if not verbose:
        callbacks.append(ProgressView(role, expected, max_epochs))
    if mlflow:
        callbacks.append(mlflow_callback(mlflow, spec.name, role))
    name = _fresh_name(folder, phase.value)
    if searching and isinstance(folder, Path):  # restored from Tune's saved state: keep a complete copy
        callbacks.append(StateKeeper(str(folder / name), period_s=TUNE_STATE_PERIOD_S))
    storage_path, storage_filesystem = ray_storage(folder)
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage_path,
        storage_filesystem=storage_filesystem,
        callbacks=callbacks,
        verbose=verbose,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=0),
    )
    # Reusing a trial process saves its start-up (torch + timm imports); a ray-train trial's
    # thread is still tearing down its worker group when the next trial arrives, so not there.
    reuse = backend_for(spec.resources) == "local"
    concurrency = {"max_concurrent_trials": spec.search.max_concurrent, "reuse_actors": reuse}
    if searching:
        # Optuna's journal needs a file system (appends under a file lock): with object-store
        # storage the study stays in memory, inside Tune's saved searcher state as before
        journal = folder / STUDY_FILE if isinstance(folder, Path) else None
        if journal is not None and journal.exists():  # a start Tune never saved: search and study start over
            logger.info(f"{journal}: the search starts over; so does its Optuna study")
            journal.unlink()
        scheduler, searcher = build_scheduler(spec), build_searcher(spec, space, journal=journal)
        tell_baselines(searcher, space, read_rows(folder / TRIALS_FILE))  # they ran first: TPE starts from them
        if spec.search.warm_start is not None:
            warm_start(searcher, space, Path(spec.search.warm_start))
        _say_who_proposes(searcher, expected)
        tune_config = tune.TuneConfig(
            metric=METRIC, mode="max", search_alg=searcher, scheduler=scheduler, num_samples=expected, **concurrency
        )
        return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config), expected
    # the points through a searcher, not tune.grid_search: trial ids in the search's format
    tune_config = tune.TuneConfig(
        metric=METRIC, mode="max", search_alg=PointsSearcher(points), num_samples=expected, **concurrency
    )
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config), expected


def _fresh_name(folder: Location, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``... for the Tune experiment of a resumed grid phase."""
    n, candidate = 1, name
    while (folder / candidate).exists():
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _say_who_proposes(searcher: OptunaSearcher, num_samples: int) -> None:
    """One line on how the trials will be proposed; a warning when TPE would propose none."""
    if searcher.name == "random":
        logger.info(f"searcher: random ({searcher.defaults} paper default(s) first)")
        return
    tpe = num_samples - searcher.defaults - searcher.startup
    if tpe <= 0:
        logger.warning(
            f"search.startup_trials: {searcher.startup} random trial(s) after {searcher.defaults} paper default(s) "
            f"leave TPE none of the {num_samples} samples: every trial is drawn at random; raise "
            "search.num_samples or lower search.startup_trials"
        )
        return
    logger.info(
        f"searcher: TPE; {searcher.defaults} paper default(s), {searcher.startup} random start-up trial(s), "
        f"then about {tpe} proposed by TPE"
    )


@contextmanager
def _tune_settings(verbose: int) -> Iterator[None]:
    """Quiet by default, for the Tuner calls only: our ProgressView instead of Tune's tables (the
    legacy reporter is the one that honours verbose=0), no INFO lines from Tune or Optuna, and
    Tune's state saved every ``TUNE_STATE_PERIOD_S``. Every setting is restored afterwards."""
    # Ctrl-C must stop the search: Tune's SIGINT handler ends the phase and returns normally
    env = {"RAY_AIR_NEW_OUTPUT": "1" if verbose else "0", "TUNE_DISABLE_SIGINT_HANDLER": "1"}
    env["TUNE_GLOBAL_CHECKPOINT_S"] = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S", str(TUNE_STATE_PERIOD_S))
    saved_env = {k: os.environ.get(k) for k in env}
    tune_logger = logging.getLogger("ray.tune")
    # a failed save of Tune's state (a full disk) is logged there with its traceback; the same
    # fault fails the next table write, which the driver reports in one line
    state_logger = logging.getLogger("ray.tune.execution.experiment_state")
    saved_level, saved_optuna = tune_logger.level, optuna.logging.get_verbosity()
    saved_state_level = state_logger.level
    os.environ.update(env)
    tune_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    state_logger.setLevel(logging.INFO if verbose else logging.CRITICAL)
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        tune_logger.setLevel(saved_level)
        state_logger.setLevel(saved_state_level)
        optuna.logging.set_verbosity(saved_optuna)


class SearchInterrupted(KeyboardInterrupt):
    """Tune stopped before every trial ended (Ctrl-C): the folder can be resumed."""

    def __init__(self, folder: Location):
        super().__init__(f"search interrupted; continue it with: ofasearch resume {folder}")
        self.folder = folder


def _fit_or_interrupt(tuner: tune.Tuner, expected: int, folder: Location) -> None:
    """Run the Tuner. Ctrl-C raises KeyboardInterrupt here (Tune's own handler, which would let
    the run go on to the next phase, is off: see :func:`_tune_settings`); Tune's state saved every
    ``TUNE_STATE_PERIOD_S`` has the trials it cut short as unfinished, so resume re-runs them. A
    Tuner that returns with trials missing was stopped some other way: also resumable."""
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:
        raise SearchInterrupted(folder) from None
    if grid.num_terminated + grid.num_errors < expected:
        raise SearchInterrupted(folder)


def _finish(spec: Spec, folder: Location) -> Location:
    if "finished_at" not in read_state(folder):
        update_state(folder, finished_at=time.time())
    rows = read_rows(folder / TRIALS_FILE)
    best = write_best(folder, rows, spec.optim.epochs)
    val_images = read_state(folder).get("val_images")
    logger.info(f"scores: {spec.data.protocol}")
    if spec.search.baselines:
        logger.info(f"baselines: {', '.join(spec.search.baselines)} at preset {spec.search.baseline_preset!r}")
    for line in summary_lines(rows, spec.optim.epochs, list(spec.searched_values()), val_images):
        logger.info(line)
    logger.info(f"results: {folder} (trials.parquet, epochs.parquet, TensorBoard: tensorboard --logdir {folder})")
    logger.info(f"report: ofasearch report {folder}; a config for production: ofasearch export {folder} [--rank K]")
    logger.info(f"best config: {best}" if best else "no search trial ran the full budget: no best.yaml")
    return folder


def resume_search(
    folder: str | Path | ObjectPath, *, verbose: int = 0, force_new_spec: bool = False, mlflow: str | None = None
) -> Location:
    """Continue an interrupted search (a path or an object-store URI): finished trials are kept,
    unfinished ones re-run. The spec is the one the search started with (see
    :func:`_spec_hash_to_record`). ``mlflow``: log the trials still to run there (default: where
    the run logged, if it did)."""
    check_mlflow(mlflow)
    folder = as_location(folder).resolve()
    note_results_folder(folder)
    if not (folder / SPEC_FILE).is_file():
        load_folder_spec(folder)  # says what the folder is not
    with hold_folder(folder, f"ofasearch resume {folder}"):
        return _resume(folder, verbose=verbose, force_new_spec=force_new_spec, mlflow=mlflow)


def _resume(folder: Location, *, verbose: int, force_new_spec: bool, mlflow: str | None) -> Location:
    """:func:`resume_search` once the folder is held by this driver."""
    journal_lock = folder / f"{STUDY_FILE}.lock"
    if isinstance(folder, Path) and journal_lock.exists():  # no other driver: a kill mid-append left it
        logger.info(f"{journal_lock}: left by a driver killed while writing the study; removed")
        journal_lock.unlink(missing_ok=True)
    new_hash = spec_hash_to_record(folder, force_new_spec=force_new_spec)
    spec = load_folder_spec(folder, check_models=True)  # about to build models
    read_tables(folder)  # a deleted or damaged table: say how to rebuild it, before anything runs
    check_same_data(spec, folder, force_new_spec=force_new_spec)
    if new_hash is not None:
        update_state(folder, **{SPEC_HASH_KEY: new_hash})
    if mlflow is not None:
        update_state(folder, mlflow=recorded_tracking_uri(mlflow))
    state = read_state(folder)
    check_mlflow(state.get("mlflow"))  # the run logged to MLflow: so does its resume
    space = SearchSpace(spec, state["stages"])
    if state.get("phase") is Phase.DONE:
        logger.info(f"{folder}: search already finished")
        stop_abandoned_instances()  # a driver killed after its search finished left its Ray running
        return _finish(spec, folder)
    return _execute(
        spec,
        space,
        folder,
        address=state.get("address"),
        num_cpus=state.get("num_cpus"),
        verbose=verbose,
        restore=True,
    )


def load_and_run(path: str, **kwargs: Any) -> Location:
    """CLI helper: load (with ``overrides``: ``--set key=value``), apply ``--name/--storage``, run.
    Without ``--name`` an earlier search of
    the same name is never touched: this one goes to ``name-2`` (``-3``...)."""
    spec = load_spec(path, overrides=kwargs.pop("overrides", ()))
    overrides = {k: v for k in ("name", "storage") if (v := kwargs.pop(k, None))}
    if overrides:
        data = spec.model_dump(mode="json")
        data.update(overrides)
        spec = parse_spec(data, path).resolve_paths(Path.cwd())
    return run_search(spec, next_free_name="name" not in overrides, **kwargs)
