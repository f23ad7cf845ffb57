"""``ofasearch run/resume/status``: Ray Tune + Optuna TPE + ASHA over OFA-KD settings.

Flow: validate and *plan* (load the data, build each pair once to measure the students' stages)
-> prepare teachers (auto-train once, before any trial, so trials never race for them) -> the
search Tuner (OptunaSearch define-by-run, paper defaults first; ASHA on ``epoch``) -> the
baseline Tuner (student alone and vanilla KD per pair at full budget, never shown to Optuna)
-> ``best.yaml`` and a summary. The experiment folder holds everything ``resume`` needs.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ray import tune

from ofasearch.config import Spec, load_spec, parse_spec
from ofasearch.data import load_splits
from ofasearch.errors import SpecError
from ofasearch.results.tables import SPEC_FILE, load_folder_spec, summary_lines, write_best
from ofasearch.search.plan import plan
from ofasearch.search.progress import ProgressView
from ofasearch.search.recorder import Recorder, ResultTables, trial_params
from ofasearch.search.space import SearchSpace
from ofasearch.search.trial import BASELINE_KEY, backend_for, run_trial, trial_resources
from ofasearch.training.teacher import prepare_logit_cache, prepare_teacher

__all__ = ["SearchInterrupted", "plan", "resume_search", "run_search", "search_status"]

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
# Tune saves its experiment state (trial statuses, searcher) at most this often; a killed driver
# loses at most this much: trials finished since then re-run on resume.
TUNE_STATE_PERIOD_S = 2


def _trainable(spec: Spec, space: SearchSpace, teachers: list[dict | None], folder: Path):  # noqa: ANN202
    def trial(config: dict[str, Any]) -> None:
        run_trial(trial_params(config), spec=spec_data, stages=stages, teachers=teachers, train_storage=train_storage)

    spec_data = spec.model_dump(mode="json", exclude={"teachers", "students"})
    stages, train_storage = space.available_stages, str(folder / "train_runs")
    resources = {k: v for k, v in trial_resources(spec.resources).items() if v > 0}
    return tune.with_resources(trial, resources)


def _searcher(space: SearchSpace, spec: Spec):  # noqa: ANN202
    import optuna
    from optuna.samplers import TPESampler
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's `group`

    max_epochs = int(spec.optim.epochs)

    class PruningAwareOptunaSearch(OptunaSearch):
        """Tells Optuna PRUNED (not COMPLETE with an early-rung score) for ASHA-stopped trials;
        their per-epoch values were already reported as intermediate values, which TPE uses."""

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            stopped = result is not None and not error and int(result.get("epoch", max_epochs)) < max_epochs
            if stopped and not result.get("diverged") and trial_id not in self._completed_trials:
                self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
                self._completed_trials.add(trial_id)
                return
            super().on_trial_complete(trial_id, result, error)

    return PruningAwareOptunaSearch(
        space=space.define,
        metric="val_acc",
        mode="max",
        points_to_evaluate=[space.defaults(i) for i in range(len(space.pairs))],
        sampler=TPESampler(seed=spec.seed, multivariate=True, group=True),
    )


def _run_config(folder: Path, name: str, callbacks: list[tune.Callback], verbose: int) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        storage_path=str(folder),
        callbacks=callbacks,
        verbose=verbose,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=0),
    )


def _state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _set_state(folder: Path, **update: Any) -> None:
    state = {**_state(folder), **update}
    tmp = folder / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(folder / STATE_FILE)


def run_search(
    spec: Spec,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    dry_run: bool = False,
    verbose: int = 0,
) -> Path:
    """Run the whole search; returns the experiment folder ``<storage>/<name>``."""
    folder = Path(spec.storage) / spec.name
    space = plan(spec)
    if dry_run:
        logger.info(
            f"dry run: {spec.search.num_samples} trials over {len(space.pairs)} pair(s); results would go to {folder}"
        )
        return folder
    if (folder / SPEC_FILE).exists():
        raise SpecError(
            [
                f"name: {folder} already holds a search; `ofasearch resume {folder}` "
                "continues it, or choose another --name"
            ]
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC_FILE).write_text(spec.to_yaml())
    _set_state(
        folder,
        phase="teachers",
        stages=space.available_stages,
        address=address,
        num_cpus=num_cpus,
        started_at=time.time(),
    )
    return _execute(spec, space, folder, address=address, num_cpus=num_cpus, verbose=verbose)


def fresh_folder(storage: Path, name: str) -> Path:
    """``storage/name``, or ``name-2``, ``name-3``... when an earlier search is there."""
    folder, n = storage / name, 1
    while (folder / SPEC_FILE).exists():
        n += 1
        folder = storage / f"{name}-{n}"
    return folder


def _prepare_teachers(spec: Spec, space: SearchSpace) -> list[dict[str, Any]]:
    """Every pair's teacher (auto-trained once) and its logit cache, before any trial starts, so
    trials share them and never race to build them."""
    splits = load_splits(spec.data)
    gpus = spec.resources.gpus_per_worker
    teachers: list[dict[str, Any]] = []
    for pair in space.pairs:
        info = prepare_teacher(pair.teacher, spec.data, splits, gpus=gpus)
        distill = space.cache_settings()
        cache = prepare_logit_cache(
            pair.teacher,
            info,
            spec.data,
            splits,
            distill,
            seed=spec.seed,
            epochs=int(spec.optim.epochs),
            gpus=gpus,
            progress=True,
        )
        teachers.append({"info": asdict(info), "cache": asdict(cache) if cache else None})
    return teachers


def _execute(
    spec: Spec,
    space: SearchSpace,
    folder: Path,
    *,
    address: str | None,
    num_cpus: int | None,
    verbose: int,
    restore: bool = False,
) -> Path:
    from ray.tune.schedulers import ASHAScheduler

    from ofasearch.cluster.ray_session import check_fits, ensure_ray

    ensure_ray(address, num_cpus, worker_output=bool(verbose))
    res = spec.resources  # checked before teachers are trained: a trial too big fails in seconds
    check_fits({"CPU": res.cpus_per_worker, "GPU": res.gpus_per_worker}, res.workers_per_trial, "resources")
    state = _state(folder)
    teachers = state.get("teachers") or _prepare_teachers(spec, space)
    _set_state(folder, teachers=teachers, phase=state.get("phase") if restore else "search")
    # Quiet by default: our ProgressView instead of Tune's tables (the legacy reporter is the one
    # that honours verbose=0) and no INFO lines; --verbose gives Ray's own output back.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if verbose else "0"
    logging.getLogger("ray.tune").setLevel(logging.INFO if verbose else logging.WARNING)
    spec_data = spec.model_dump(mode="json", exclude={"teachers", "students"})

    def callbacks(role: str, total: int) -> list[tune.Callback]:
        recorder = Recorder(str(folder), spec_data, space.available_stages, role=role)
        return [recorder] if verbose else [recorder, ProgressView(role, total, int(spec.optim.epochs))]

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(TUNE_STATE_PERIOD_S))
    trainable = _trainable(spec, space, teachers, folder)
    # Reusing a trial process saves its start-up (torch + timm imports); a ray-train trial's
    # thread is still tearing down its worker group when the next trial arrives, so not there.
    reuse = backend_for(spec.resources) == "local"
    if _state(folder).get("phase") == "search":
        if restore and tune.Tuner.can_restore(str(folder / "search")):
            tuner = tune.Tuner.restore(str(folder / "search"), trainable, resume_unfinished=True, restart_errored=False)
        else:
            scheduler = ASHAScheduler(
                time_attr="epoch",
                max_t=int(spec.optim.epochs),
                grace_period=spec.search.grace_epochs,
                reduction_factor=spec.search.reduction_factor,
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    metric="val_acc",
                    mode="max",
                    search_alg=_searcher(space, spec),
                    scheduler=scheduler,
                    num_samples=spec.search.num_samples,
                    max_concurrent_trials=spec.search.max_concurrent,
                    reuse_actors=reuse,
                ),
                run_config=_run_config(folder, "search", callbacks("search", spec.search.num_samples), verbose),
            )
        _fit_or_interrupt(tuner, spec.search.num_samples, folder)
        _set_state(folder, phase="baselines" if spec.search.baselines else "done")
    if _state(folder).get("phase") == "baselines":
        if restore and tune.Tuner.can_restore(str(folder / "baselines")):
            tuner = tune.Tuner.restore(str(folder / "baselines"), trainable, resume_unfinished=True)
        else:
            points = [{**space.defaults(i), BASELINE_KEY: m} for i in range(len(space.pairs)) for m in ("none", "kd")]
            tuner = tune.Tuner(
                trainable,
                param_space={"point": tune.grid_search(points)},
                tune_config=tune.TuneConfig(
                    metric="val_acc", mode="max", max_concurrent_trials=spec.search.max_concurrent, reuse_actors=reuse
                ),
                run_config=_run_config(folder, "baselines", callbacks("baseline", 2 * len(space.pairs)), verbose),
            )
        _fit_or_interrupt(tuner, 2 * len(space.pairs), folder)
        _set_state(folder, phase="done")
    return _finish(spec, folder)


class SearchInterrupted(KeyboardInterrupt):
    """Tune stopped before every trial ended (Ctrl-C): the folder can be resumed."""

    def __init__(self, folder: Path):
        super().__init__(f"search interrupted; continue it with: ofasearch resume {folder}")
        self.folder = folder


def _fit_or_interrupt(tuner: tune.Tuner, expected: int, folder: Path) -> None:
    """Run the Tuner; Tune returns normally after Ctrl-C, so count the trials that ended."""
    grid = tuner.fit()
    if grid.num_terminated + grid.num_errors < expected:
        raise SearchInterrupted(folder)


def _finish(spec: Spec, folder: Path) -> Path:
    if "finished_at" not in _state(folder):
        _set_state(folder, finished_at=time.time())
    rows = ResultTables(folder, SearchSpace(spec, _state(folder)["stages"])).trials.values()
    rows = list(rows)
    best = write_best(folder, rows, int(spec.optim.epochs))
    for line in summary_lines(rows, int(spec.optim.epochs), list(spec.searched_values())):
        logger.info(line)
    logger.info(f"results: {folder} (trials.parquet, epochs.parquet, TensorBoard: tensorboard --logdir {folder})")
    logger.info(f"report: ofasearch report {folder}; a config for production: ofasearch export {folder} [--rank K]")
    logger.info(f"best config: {best}" if best else "no search trial ran the full budget: no best.yaml")
    return folder


def resume_search(folder: Path, *, verbose: int = 0) -> Path:
    """Continue an interrupted search: finished trials are kept, unfinished ones re-run."""
    folder = folder.resolve()
    spec = load_folder_spec(folder)
    state = _state(folder)
    space = SearchSpace(spec, state["stages"])
    if state.get("phase") == "done":
        logger.info(f"{folder}: search already finished")
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


def search_status(folder: Path) -> list[dict[str, Any]]:
    """Print the trials so far (reads only the Parquet table; safe while a search runs)."""
    folder = folder.resolve()
    spec = load_folder_spec(folder)
    rows = ResultTables(folder, SearchSpace(spec, _state(folder).get("stages", []))).trials
    logger.info(f"{folder}: phase {_state(folder).get('phase', '?')}")
    for line in summary_lines(list(rows.values()), int(spec.optim.epochs), list(spec.searched_values())):
        logger.info(line)
    return list(rows.values())


def load_and_run(path: str, **kwargs: Any) -> Path:
    """CLI helper: load, apply ``--name/--storage``, run. Without ``--name`` an earlier search of
    the same name is never touched: this one goes to ``name-2`` (``-3``...)."""
    spec = load_spec(path)
    overrides = {k: v for k in ("name", "storage") if (v := kwargs.pop(k, None))}
    if overrides:
        data = spec.model_dump(mode="json", exclude={"teachers", "students"})
        data.update(overrides)
        spec = parse_spec(data, path).resolve_paths(Path.cwd())
    if "name" not in overrides:
        folder = fresh_folder(Path(spec.storage), spec.name)
        if folder.name != spec.name:
            logger.info(f"{Path(spec.storage) / spec.name} holds an earlier search; this one: {folder}")
            spec = spec.model_copy(update={"name": folder.name})
    return run_search(spec, **kwargs)
