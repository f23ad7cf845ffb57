"""Replay benchmark of the searcher over the composition space: does TPE+ASHA find good configs
with fewer epochs than random search, does telling it the baselines first help, and which
smoothing of val_acc should ASHA's rungs read?

Training is too slow to run a search dozens of times, so a grid of configs (a discrete version
of a composition space: digits at 16 px, resnet10t teacher, tiny ViT and Mixer students) is
trained once, every config to the full budget, and so is each pair's every baseline (none, kd,
dkd, dist at the ``authors`` presets, as ``search.baselines`` runs them). Their per-epoch
validation curves are stored in ``scripts/data/bench_compositions.parquet``. Replay then drives
the product's own search path (``build_searcher``, ``build_scheduler``, the enqueued paper
defaults, ``tell_baselines``) many times with training replaced by a lookup into that table, so
searchers are compared over seeds at no training cost.

    nice -n 10 python scripts/bench_search.py record  # train the table (resumable; 16 min on 2 shared cores)
    python scripts/bench_search.py               # replay TPE+ASHA vs random and baselines told or not (16/24/32
                                                 # trials, 100 seeds per row; about 4 min on 2 shared cores)
    python scripts/bench_search.py --section rungs  # ASHA's rung metric: last epoch, mean of two, best so far
    python scripts/bench_search.py --tune        # also a few values of each search default
    python scripts/bench_search.py --warm-start  # TPE+ASHA from a cold and from a warm start
    python scripts/bench_search.py --smoke-test  # every section, 3 seeds, 16 trials: seconds, for CI
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pyarrow as pa
import pyarrow.parquet as pq
from optuna.trial import TrialState

from ofasearch.config import Spec
from ofasearch.results.outcome import COMPLETED
from ofasearch.search.grids import baseline_points
from ofasearch.search.searcher import METRIC, PROPOSED_BY, build_scheduler, build_searcher
from ofasearch.search.space import SearchSpace, encode
from ofasearch.search.trial import BASELINE_KEY, trial_config
from ofasearch.search.warm_start import tell_baselines

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "scripts" / "data" / "bench_compositions.parquet"
META_KEY = b"bench_search"  # the Parquet schema-metadata key of the recording's JSON description

VIT = {"model": "vit_tiny_patch16_224", "kwargs": {"patch_size": 4, "embed_dim": 48, "depth": 4, "num_heads": 2}}
MIXER = {"model": "MlpMixer", "kwargs": {"patch_size": 4, "num_blocks": 2, "embed_dim": 48}}
TEACHER = {"model": "resnet10t", "checkpoint": "auto", "recipe": {"epochs": 4, "batch_size": 64}}
# A discrete composition space (DESIGN section 7): every searched value is a list of choices, so
# every proposal is a table point. The structure: the loss on the final logits x the exit-branch
# stages ([]: none; the 2-block Mixer has stages 3 and 4 only) x the branches' loss, with or without
# logit standardization, at kd_weight 1 or 2. The constants make the dkd and dist baselines of the
# ``authors`` preset (digits reads its CIFAR settings) points of the space: DKD alpha 1, beta 8,
# T 4 (the schema's defaults), DIST beta 1, gamma 1, T 4 with loss weight 2 (kd_weight's second
# choice); kd (CE weight 0.1, T 4) and none (no teacher) are not, and are recorded all the same.
# lr is each pair's own: its best of the previous grid's lr choices (tiny ViT 0.005, Mixer 0.01).
# val_fraction 0.25 (360 images): one image is 0.28 points, finer than the 0.5-point target.
GRID_SPEC: dict[str, Any] = {
    "name": "bench-compositions",
    "seed": 0,
    "data": {"dataset": "digits", "image_size": 16, "val_fraction": 0.25},
    "pairs": [
        {"teacher": TEACHER, "student": VIT, "settings": {"optim.lr": 0.005}},
        {"teacher": TEACHER, "student": MIXER, "settings": {"optim.lr": 0.01}},
    ],
    "distill": {
        "method": "ofa",
        "logit_loss": {"choices": ["ofa", "kd", "dkd", "dist"]},
        "stages": {"choices": [[], [3, 4], [1, 2, 3, 4]]},
        "branch_loss": {"choices": ["ofa", "dist"]},
        "logit_standardize": {"choices": [False, True]},
        "kd_weight": {"choices": [1.0, 2.0]},
        "dist_temperature": 4.0,
    },
    "optim": {"epochs": 6, "batch_size": 64},
    # grace: the product's default; baselines: all four, at the product's default preset (authors)
    "search": {
        "num_samples": 16,
        "reduction_factor": 3,
        "max_concurrent": 2,
        "baselines": ["none", "kd", "dkd", "dist"],
    },
}
GRID, BASELINE = "grid", "baseline"  # a row's role: a point of the space, or a pair's baseline
WITHIN = 0.005  # "found the best": within half a point of the table's best
NOTHING_FOUND = 0.0  # best val_acc before any full-budget trial finished (regret = the table best)
SAMPLES = (16, 24, 32)  # num_samples the replay reports (budget B = num_samples x epochs)


# ---------------------------------------------------------------------------------------- table
@dataclass
class Table:
    """The recorded curves: ``curves[key]`` is a grid point's val_acc per epoch (1..max),
    ``baselines[key]`` a baseline's, ``configs[key]`` the YAML of the config each one trained."""

    spec: Spec
    available_stages: list[list[int]]
    curves: dict[str, list[float]]
    baselines: dict[str, list[float]]
    configs: dict[str, str]
    meta: dict[str, Any]

    @property
    def epochs(self) -> int:
        return self.spec.optim.epochs

    def best(self) -> float:
        """The best any grid point reaches, ranked as the product ranks a trial (its best epoch)."""
        return max(max(curve) for curve in self.curves.values())

    def baseline_rows(self) -> list[dict[str, Any]]:
        """The baselines as ``trials.parquet`` rows: what ``tell_baselines`` reads after they ran."""
        rows = []
        for n, (key, curve) in enumerate(sorted(self.baselines.items())):
            method, pair = json.loads(key)["baseline"], json.loads(key)["pair"]
            teacher, student = pair.split(" -> ")
            rows.append(
                {
                    "role": "baseline",
                    "status": COMPLETED,
                    "trial_id": f"baseline{n}",
                    "method": method,
                    "teacher": teacher,
                    "student": student,
                    "config": self.configs[key],
                    "epochs": len(curve),
                    "val_acc": max(curve),
                    "val_acc_last": curve[-1],
                }
            )
        return rows


def point_key(params: dict[str, Any]) -> str:
    """A grid point's identity in the table: its Optuna params (only those its composition reads)."""
    return json.dumps({k: v for k, v in params.items() if k != PROPOSED_BY}, sort_keys=True)


def baseline_key(method: str, pair: str) -> str:
    return json.dumps({"baseline": method, "pair": pair}, sort_keys=True)


def grid_points(space: SearchSpace) -> Iterator[dict[str, Any]]:
    """Every point of the discrete space, each pair's own stage choices, as the Optuna params a
    search proposes for it (the choices product, each combination reduced by ``params_of`` to
    the values its composition reads; duplicates dropped)."""
    searched = space.spec.searched_values()
    seen: set[str] = set()
    for pair in range(len(space.pairs)):
        axes: list[tuple[str, list[Any]]] = []
        for path, dist in searched.items():
            choices = getattr(dist, "choices", None)
            assert choices is not None, f"{path}: the benchmark's space must be discrete"
            if path == "distill.stages":
                choices = space.stage_choices(pair)
            axes.append((space.param_name(path, pair), [encode(c) for c in choices]))
        for values in itertools.product(*(c for _, c in axes)):
            raw = {"pair": space.pairs[pair].label} if len(space.pairs) > 1 else {}
            raw.update(zip([name for name, _ in axes], values, strict=True))
            point = space.params_of(space.config_for(raw))
            if point_key(point) not in seen:
                seen.add(point_key(point))
                yield point


def load_table(path: Path = TABLE) -> Table:
    """The shipped recording with the spec it was recorded from (kept in the file's metadata)."""
    data = pq.read_table(path)
    meta = json.loads(data.schema.metadata[META_KEY])
    curves: dict[str, list[float]] = {}
    baselines: dict[str, list[float]] = {}
    configs: dict[str, str] = {}
    for row in sorted(data.to_pylist(), key=lambda r: (r["key"], r["epoch"])):
        (curves if row["role"] == GRID else baselines).setdefault(row["key"], []).append(row["val_acc"])
        configs[row["key"]] = row["config"]
    spec = Spec.model_validate(meta["spec"])
    return Table(spec, meta["available_stages"], curves, baselines, configs, meta)


# ------------------------------------------------------------------------------------- record
def _curve_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """What a recorded curve depends on: everything but the search settings (each grid config
    trains to the full budget; each row keeps the config it trained), so a table stays valid when
    the searcher's defaults change."""
    return {key: value for key, value in spec.items() if key != "search"}


def software_versions() -> dict[str, str]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    found = {name: version(name) for name in ("torch", "timm", "optuna", "ray", "scikit-learn", "numpy")}
    return {"python": platform.python_version(), "ofasearch_commit": commit, **found}


def _write_table(rows: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    data = pa.Table.from_pylist(rows).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(data, tmp, compression="zstd")
    tmp.replace(path)  # a kill mid-write leaves the previous table intact


def recording_points(space: SearchSpace) -> list[tuple[str, str, dict[str, Any]]]:
    """(key, role, params) of every run the table holds: each pair's baselines, then the grid."""
    baselines = [
        (baseline_key(p[BASELINE_KEY], trial_config(space, p).pair.label), BASELINE, p) for p in baseline_points(space)
    ]
    return baselines + [(point_key(p), GRID, p) for p in grid_points(space)]


def record(path: Path, cache: Path, limit: int | None) -> None:
    """Train every grid config and baseline to the full budget with ``ofasearch train`` (the
    product's stable contract) and append its curve to the table; runs already in it are skipped."""
    os.environ["OFASEARCH_CACHE"] = str(cache)  # the teacher is trained once, its logits reused
    from ofasearch.cli import main as ofasearch_main
    from ofasearch.search.plan import plan

    spec = Spec.model_validate(GRID_SPEC)
    space = plan(spec)
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"record_seconds": 0.0, "session_seconds": []}
    session_start = time.perf_counter()
    if path.exists():
        rows, meta = pq.read_table(path).to_pylist(), json.loads(pq.read_table(path).schema.metadata[META_KEY])
        if _curve_settings(meta["spec"]) != _curve_settings(GRID_SPEC):
            sys.exit(f"{path} was recorded from another grid; move it away to record this one")
    done = {r["key"] for r in rows}
    points = recording_points(space)
    meta.update(
        spec=GRID_SPEC,
        available_stages=space.available_stages,
        command=f"nice -n {os.nice(0)} python scripts/bench_search.py {' '.join(sys.argv[1:])}",
        software=software_versions(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {_threads()}",
        configs=sum(role == GRID for _, role, _ in points),
        baselines=sum(role == BASELINE for _, role, _ in points),
    )
    meta.setdefault("session_seconds", []).append(0.0)
    todo = [p for p in points if p[0] not in done][:limit]
    print(
        f"{len(points)} runs in the table (grid and baselines), {len(done)} recorded, {len(todo)} to train", flush=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n, (key, role, params) in enumerate(todo, 1):
            config = trial_config(space, params)
            yaml_path, out = Path(tmp) / "config.yaml", Path(tmp) / f"run{n}"
            yaml_path.write_text(config.to_yaml())
            start = time.perf_counter()
            code = ofasearch_main(["train", str(yaml_path), "--output", str(out), "--no-progress"])
            seconds = time.perf_counter() - start
            if code != 0:
                sys.exit(f"ofasearch train failed ({code}) for {key}")
            history = json.loads((out / "metrics.json").read_text())["history"]
            method = params.get(BASELINE_KEY, config.distill.method)
            for h in history:
                rows.append(
                    {
                        "key": key,
                        "role": role,
                        "method": method,
                        "pair": config.pair.label,
                        "student": config.pair.student.label,
                        "composition": config.distill.composition,
                        "config": config.to_yaml(),
                        "epoch": h["epoch"],
                        "val_acc": h["val_acc"],
                        "epoch_seconds": h["seconds"],
                        "run_seconds": seconds,
                    }
                )
            meta["record_seconds"] += seconds
            meta["session_seconds"][-1] = time.perf_counter() - session_start
            _write_table(rows, meta, path)
            name = f"{method} (baseline)" if role == BASELINE else config.distill.composition
            print(
                f"[{len(done) + n}/{len(points)}] {config.pair.student.model} {name} kd_weight "
                f"{config.distill.kd_weight:g}: {history[-1]['val_acc']:.4f} in {seconds:.1f}s",
                flush=True,
            )
    _write_table(rows, meta, path)
    print(f"table: {path} ({path.stat().st_size / 1024:.0f} KiB, {len(rows)} rows)")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# ------------------------------------------------------------------------------------- replay
RungFn = Callable[[list[float]], float]
# ASHA rung metrics measured against each other (the val_acc curve so far -> the value a rung reads).
# The product's ASHA reads the last epoch's val_acc ("last"); ``--section rungs`` found neither the
# mean of the last two epochs nor the best so far better (at the default rung, epoch 2, "best"
# differs from "last" on 6 of the 128 grid curves; at reduction factor 2, rungs at epochs 2 and 4,
# TPE without the baselines loses up to 0.13 pt of regret at 1B with either smoothing).
RUNGS: dict[str, RungFn] = {
    "last": lambda curve: curve[-1],
    "mean2": lambda curve: sum(curve[-2:]) / len(curve[-2:]),
    "best": max,
}
RUNG_KEY = "rung_candidate"  # the result key a candidate rung metric is replayed under


@dataclass(frozen=True)
class Method:
    """A way to search: which proposer, whether ASHA stops trials (``rung``: a replayed candidate
    of :data:`RUNGS` instead of the product's rung metric), whether the baselines are told to the
    study first (as a search does), or only the paper defaults."""

    name: str
    searcher: str  # tpe | random
    asha: bool
    defaults_only: bool = False
    told: bool = True
    rung: str | None = None


METHODS = (
    Method("TPE+ASHA (default)", "tpe", asha=True),
    Method("random+ASHA", "random", asha=True),
    Method("random+FIFO", "random", asha=False),
    Method("TPE+FIFO", "tpe", asha=False),
    Method("paper defaults only", "tpe", asha=False, defaults_only=True),
)
NOT_TOLD = Method("TPE+ASHA, baselines not told", "tpe", asha=True, told=False)


@dataclass
class ReplayTrial:
    """What Ray's schedulers read of a trial (ASHA only uses its id)."""

    trial_id: str
    key: str
    proposed_by: str
    epoch: int = 0


@dataclass
class Run:
    """One replayed search: the best full-budget val_acc after each full-budget trial, by epochs spent."""

    curve: list[tuple[int, float]]
    trials: list[ReplayTrial]
    epochs: int
    finished: list[Any] = field(default_factory=list)  # the study's COMPLETE/PRUNED trials (a warm start's input)

    def best_by(self, epochs: int) -> float:
        """The best full-budget val_acc found within ``epochs`` epochs of training."""
        found = [best for spent, best in self.curve if spent <= epochs]
        return found[-1] if found else NOTHING_FOUND

    def epochs_to_reach(self, target: float) -> float:
        """Epochs spent when a full-budget trial first reached ``target`` (inf: never)."""
        return next((spent for spent, best in self.curve if best >= target), math.inf)


def replay_spec(table: Table, method: Method, seed: int, settings: dict[str, Any]) -> Spec:
    """The recorded curves' spec with this method's searcher, the seed and the search settings tried
    (the benchmark's current ones, not those stored with the recording)."""
    data = json.loads(json.dumps(table.meta["spec"]))
    data["seed"] = seed
    data["search"] = {**GRID_SPEC["search"], **settings, "searcher": method.searcher}
    return Spec.model_validate(data)


def _scheduler(spec: Spec, method: Method) -> Any:
    """The product's ASHA (``build_scheduler``), ASHA reading a candidate rung metric, or FIFO;
    given Tune's metric and mode as ``TuneConfig(metric=METRIC, mode="max")`` gives them."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if not method.asha:
        scheduler = FIFOScheduler()
    elif method.rung is None:
        scheduler = build_scheduler(spec)
    else:
        scheduler = ASHAScheduler(
            time_attr="epoch",
            metric=RUNG_KEY,
            mode="max",
            max_t=spec.optim.epochs,
            grace_period=spec.search.grace_epochs,
            reduction_factor=spec.search.reduction_factor,
        )
        return scheduler  # Tune would refuse a TuneConfig metric on top of it
    if not scheduler.set_search_properties(METRIC, "max"):
        raise ValueError("the scheduler refuses Tune's metric: tune.Tuner would raise")
    return scheduler


def _result(curve_so_far: list[float], method: Method) -> dict[str, Any]:
    """What a trial reports after its latest epoch, as ``fit_for_search`` reports it."""
    epoch = len(curve_so_far)
    result = {"epoch": epoch, "training_iteration": epoch, METRIC: curve_so_far[-1]}
    if method.rung is not None:
        result[RUNG_KEY] = RUNGS[method.rung](curve_so_far)
    return result


def replay(
    table: Table, method: Method, seed: int, budget: int, settings: dict[str, Any], warm: list[Any] | None = None
) -> Run:
    """Drive the product's searcher (and ASHA) as Ray Tune does, training replaced by the table.

    The baselines ran before the search (their epochs are not counted): with ``method.told`` they
    are told to the study first, as a search does (``tell_baselines``). Up to ``max_concurrent``
    trials run at once, one epoch each in turn (launch order), so the interleaving is
    deterministic. Per result, as Tune's controller: the scheduler decides first; the searcher
    sees the result only if the trial continues; a stopped or finished trial is completed in the
    scheduler, then in the searcher. New trials start until ``budget`` epochs are spent (ASHA
    methods thereby run more than ``num_samples`` trials for the same epochs)."""
    from ray.tune.schedulers import TrialScheduler

    spec = replay_spec(table, method, seed, settings)
    space = SearchSpace(spec, table.available_stages)
    searcher = build_searcher(spec, space)
    scheduler = _scheduler(spec, method)
    max_trials = searcher.defaults if method.defaults_only else math.inf
    running: list[ReplayTrial] = []
    trials: list[ReplayTrial] = []
    curve: list[tuple[int, float]] = []
    spent, best = 0, NOTHING_FOUND
    if method.told:
        tell_baselines(searcher, space, table.baseline_rows())
    for finished in warm or []:  # a warm start from the same space: what warm_start() adds from a folder
        searcher.study.add_trial(finished)
    while spent < budget:
        while len(running) < spec.search.max_concurrent and len(trials) < max_trials:
            trial_id = f"{len(trials):05d}"
            params = searcher.suggest(trial_id)
            proposer = params.pop(PROPOSED_BY)
            key = point_key(params)
            if key not in table.curves:
                raise KeyError(f"the table has no config {key}: record the grid first")
            trial = ReplayTrial(trial_id, key, proposer)
            scheduler.on_trial_add(None, trial)
            running.append(trial)
            trials.append(trial)
        if not running:
            break
        for trial in list(running):
            trial.epoch += 1
            spent += 1
            curve_so_far = table.curves[trial.key][: trial.epoch]
            result = _result(curve_so_far, method)
            decision = scheduler.on_trial_result(None, trial, result)
            if decision != TrialScheduler.STOP:
                searcher.on_trial_result(trial.trial_id, result)
            if decision == TrialScheduler.STOP or trial.epoch == spec.optim.epochs:
                scheduler.on_trial_complete(None, trial, result)
                searcher.on_trial_complete(trial.trial_id, result)
                running.remove(trial)
                if trial.epoch == spec.optim.epochs:  # ranked like the product: its best epoch
                    best = max(best, max(curve_so_far))
                    curve.append((spent, best))
            if spent >= budget:
                break
    done = searcher.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    own = [t for t in done if not {"warm", "baseline"} & set(t.user_attrs)]
    return Run(curve, trials, spent, own)


# ------------------------------------------------------------------------------------ summaries
@dataclass
class Summary:
    """One method's replays over seeds: ``regret[s, e]`` is seed s's regret in points after e epochs."""

    method: Method
    runs: list[Run]
    table_best: float
    budget: int
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    regret: np.ndarray = field(init=False)
    reach: np.ndarray = field(init=False)  # epochs until a trial within WITHIN of the table best

    def __post_init__(self) -> None:
        self.regret = np.array(
            [[100 * (self.table_best - run.best_by(e)) for e in range(self.budget + 1)] for run in self.runs]
        )
        self.reach = np.array([run.epochs_to_reach(self.table_best - WITHIN) for run in self.runs])

    def at(self, fraction: float) -> np.ndarray:
        """Each seed's regret after ``fraction`` of the budget."""
        return self.regret[:, round(fraction * self.budget)]

    def epochs_to_median(self, regret: float, rows: np.ndarray | None = None) -> float:
        """Fewest epochs after which the median regret (over ``rows``, default all seeds) is at
        most ``regret`` (inf: not within the budget)."""
        medians = np.median(self.regret if rows is None else self.regret[rows], axis=0)
        hits = np.flatnonzero(medians <= regret + 1e-9)
        return float(hits[0]) if hits.size else math.inf

    @property
    def trials(self) -> float:
        return statistics.median(len(r.trials) for r in self.runs)


def run_method(table: Table, method: Method, seeds: int, budget: int, settings: dict[str, Any]) -> Summary:
    runs = [replay(table, method, seed, budget, settings) for seed in range(seeds)]
    return Summary(method, runs, table.best(), budget)


def _q(values: np.ndarray, digits: int = 2) -> str:
    """median [IQR]; an infinite value ("never") stays infinite."""

    def show(v: float) -> str:
        return "never" if math.isinf(v) else f"{v:.{digits}f}"

    data = np.sort(values)
    quart = [
        np.quantile(data, q) if np.isfinite(data).all() else data[round(q * (len(data) - 1))] for q in (0.25, 0.5, 0.75)
    ]
    return f"{show(quart[1])} [{show(quart[0])}, {show(quart[2])}]"


def _mean_se(values: np.ndarray) -> str:
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return f"{values.mean():.2f} ± {se:.2f}"


def match_epochs(default: Summary, goal_of: Summary, draws: int = 1000) -> tuple[float, float, float]:
    """Epochs ``default`` needs until its median regret is at most ``goal_of``'s final median regret,
    with a 95% bootstrap interval (seeds of both resampled; inf: not within the budget)."""
    point = default.epochs_to_median(float(np.median(goal_of.regret[:, -1])))
    rng = np.random.default_rng(0)
    n, m = len(default.runs), len(goal_of.runs)
    samples = sorted(
        default.epochs_to_median(float(np.median(goal_of.regret[rng.integers(0, m, m), -1])), rng.integers(0, n, n))
        for _ in range(draws)
    )
    return point, samples[int(0.025 * draws)], samples[math.ceil(0.975 * draws) - 1]


def _epochs(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:g}"


def _match_text(match: tuple[float, float, float], budget: int) -> str:
    point, low, high = match
    ratio = "" if math.isinf(point) else f" ({point / budget:.2f})"
    return f"{_epochs(point)}{ratio} [{_epochs(low)}, {_epochs(high)}]"


def print_summaries(summaries: list[Summary], budget: int) -> None:
    head = [f"regret@{f:g}B ({round(f * budget)} ep)" for f in summaries[0].fractions]
    print(
        f"{'method':<30}" + "".join(f"{h:>22}" for h in head) + f"{'mean@1B ± s.e.':>16}"
        f"{'epochs to <=0.5 pt':>22}{'never':>7}{'trials':>8}"
    )
    for s in summaries:
        cells = "".join(f"{_q(s.at(f)):>22}" for f in s.fractions)
        print(
            f"{s.method.name:<30}{cells}{_mean_se(s.at(1.0)):>16}{_q(s.reach, 0):>22}"
            f"{int(np.isinf(s.reach).sum()):>7}{s.trials:>8g}"
        )


def target_check(default: Summary, reference: Summary) -> tuple[float, float, float]:
    """Epochs the default needs to reach the reference's final median regret, over the reference's epochs."""
    goal = float(np.median(reference.regret[:, -1]))
    match = match_epochs(default, reference)
    ratio = match[0] / reference.budget
    verdict = "MET" if ratio <= 1 / 3 else "NOT met"
    print(
        f"target (<= 1/3): {default.method.name} reaches {reference.method.name}'s final median regret "
        f"({goal:.2f} pt after {reference.budget} epochs) in {_epochs(match[0])} epochs "
        f"[95% bootstrap CI {_epochs(match[1])}, {_epochs(match[2])}]: ratio {ratio:.2f} -> {verdict}"
    )
    return match


def proposers(summary: Summary) -> str:
    counts: dict[str, int] = {}
    for run in summary.runs:
        for trial in run.trials:
            counts[trial.proposed_by] = counts.get(trial.proposed_by, 0) + 1
    return ", ".join(f"{name} {n / len(summary.runs):.1f}" for name, n in sorted(counts.items()))


def _paired(a: Summary, b: Summary, fraction: float) -> str:
    """Mean ± s.e. of a's regret minus b's over the same seeds (negative: a is better)."""
    return _mean_se(a.at(fraction) - b.at(fraction))


# ------------------------------------------------------------------------------------- sections
def compare_searchers(
    table: Table, seeds: int, samples: list[int], settings: dict[str, Any]
) -> dict[int, dict[str, Summary]]:
    """Every method at each num_samples: the full table, then TPE+ASHA against random+FIFO."""
    out: dict[int, dict[str, Summary]] = {}
    for n in samples:
        budget = n * table.epochs
        print(
            f"\nnum_samples {n}: B = {budget} epochs (random+FIFO's {n} trials x {table.epochs} epochs), {seeds} seeds"
        )
        summaries = [run_method(table, m, seeds, budget, {**settings, "num_samples": n}) for m in METHODS]
        print_summaries(summaries, budget)
        for s in summaries:
            print(f"  {s.method.name}: trials per search by proposer: {proposers(s)}")
        out[n] = {s.method.name: s for s in summaries}
        target_check(summaries[0], out[n]["random+FIFO"])
    print(f"\nTPE+ASHA vs random+FIFO ({seeds} seeds; regret in points, mean ± s.e.; epochs to match: TPE+ASHA's")
    print(
        "epochs until its median regret is at most random+FIFO's final median regret, its share of B, 95% bootstrap CI)"
    )
    head = f"{'TPE+ASHA @1B':>16}{'random+FIFO @1B':>18}{'TPE+ASHA @1/2B':>17}{'epochs to match':>26}"
    print(f"{'num_samples':>11}{'B':>5}{head}")
    for n, by_name in out.items():
        tpe, rnd = by_name["TPE+ASHA (default)"], by_name["random+FIFO"]
        match = match_epochs(tpe, rnd)
        print(
            f"{n:>11}{tpe.budget:>5}{_mean_se(tpe.at(1.0)):>16}{_mean_se(rnd.at(1.0)):>18}"
            f"{_mean_se(tpe.at(0.5)):>17}{_match_text(match, tpe.budget):>26}"
        )
    return out


def compare_told(table: Table, seeds: int, by_samples: dict[int, dict[str, Summary]], settings: dict[str, Any]) -> None:
    """TPE+ASHA with the baselines told to the study first (the product) and without."""
    print(
        f"\nbaselines told to the study first or not (TPE+ASHA, {seeds} seeds; regret over the search's own trials, "
        "the baselines' epochs not counted; mean ± s.e.; paired: told minus not told, same seeds)"
    )
    print(
        f"{'num_samples':>11}{'':>2}{'told @1/4B':>14}{'not @1/4B':>14}{'paired @1/4B':>15}{'told @1/2B':>14}"
        f"{'not @1/2B':>14}{'paired @1/2B':>15}{'told @1B':>14}{'not @1B':>14}{'paired @1B':>15}"
        f"{'epochs to match: told':>28}{'not told':>22}"
    )
    for n, by_name in by_samples.items():
        told = by_name["TPE+ASHA (default)"]
        cold = run_method(table, NOT_TOLD, seeds, told.budget, {**settings, "num_samples": n})
        cells = "".join(
            f"{_mean_se(told.at(f)):>14}{_mean_se(cold.at(f)):>14}{_paired(told, cold, f):>15}" for f in told.fractions
        )
        ref = by_name["random+FIFO"]
        print(
            f"{n:>11}{'':>2}{cells}{_match_text(match_epochs(told, ref), told.budget):>28}"
            f"{_match_text(match_epochs(cold, ref), cold.budget):>22}"
        )


RUNG_SETTINGS: tuple[dict[str, Any], ...] = ({}, {"reduction_factor": 2})  # ASHA's rungs: (2,) and (2, 4) of 6
RUNG_SEARCHERS = (  # the product's search, TPE without the baselines (its early trials matter more), random
    ("TPE+ASHA", "tpe", True),
    ("TPE not told", "tpe", False),
    ("random+ASHA", "random", False),
)


def rung_agreement(table: Table, spec: Spec) -> None:
    """Offline: how well each candidate, at each of ASHA's rungs, orders each pair's grid points by
    the value the search ranks them on (their best epoch): Spearman's rho, and the share of the top
    1/reduction_factor at the rung (what ASHA promotes) that is in the final top 1/reduction_factor."""
    from scipy.stats import spearmanr

    rf, rungs = spec.search.reduction_factor, []
    rung = spec.search.grace_epochs
    while rung < table.epochs:
        rungs.append(rung)
        rung *= rf
    space = SearchSpace(table.spec, table.available_stages)
    for pair in space.pairs:
        curves = [c for k, c in table.curves.items() if json.loads(k).get("pair", pair.label) == pair.label]
        final = np.array([max(c) for c in curves])
        top = final >= np.quantile(final, 1 - 1 / rf)
        cells = []
        for r in rungs:
            for name, fn in RUNGS.items():
                at_rung = np.array([fn(c[:r]) for c in curves])
                kept = at_rung >= np.quantile(at_rung, 1 - 1 / rf)
                cells.append(f"{name}@{r} rho {spearmanr(at_rung, final).statistic:.3f} kept {top[kept].mean():.2f}")
        print(f"  {pair.student.model} ({len(curves)} points): {'; '.join(cells)}")


def compare_rungs(table: Table, seeds: int, references: dict[int, Summary], settings: dict[str, Any]) -> None:
    """ASHA's rung metric: each candidate of RUNGS replayed as the value ASHA's rungs read, at the
    default ASHA settings (one rung, epoch 2) and at reduction factor 2 (rungs at epochs 2 and 4)."""
    print(
        f"\nASHA rung metric ({seeds} seeds; regret in points, mean ± s.e.; paired: candidate minus 'last' on the "
        "same seeds, negative = better; epochs to match random+FIFO's final median regret, 95% bootstrap CI)"
    )
    for asha in RUNG_SETTINGS:
        spec = replay_spec(table, METHODS[0], 0, {**settings, **asha})
        label = json.dumps(asha) if asha else "default ASHA settings"
        print(
            f"{label} (grace {spec.search.grace_epochs}, reduction factor {spec.search.reduction_factor}); "
            "rung metric against the final ranking of the grid:"
        )
        rung_agreement(table, spec)
        print(
            f"{'num_samples':>11}  {'searcher':<14}{'rung':<7}{'@1/4B':>14}{'@1/2B':>14}{'@1B':>14}"
            f"{'paired @1/4B':>15}{'paired @1/2B':>15}{'paired @1B':>15}{'epochs to match':>26}{'trials':>8}"
        )
        for n, ref in references.items():
            for name, base, told in RUNG_SEARCHERS:
                found: dict[str, Summary] = {}
                for rung in RUNGS:
                    method = Method(f"{name} rung={rung}", base, asha=True, told=told, rung=rung)
                    s = found[rung] = run_method(
                        table, method, seeds, ref.budget, {**settings, **asha, "num_samples": n}
                    )
                    cells = "".join(f"{_mean_se(s.at(f)):>14}" for f in s.fractions)
                    paired = "".join(f"{_paired(s, found['last'], f):>15}" for f in s.fractions)
                    match = _match_text(match_epochs(s, ref), s.budget)
                    print(f"{n:>11}  {name:<14}{rung:<7}{cells}{paired}{match:>26}{s.trials:>8g}", flush=True)


def warm_start_check(table: Table, seeds: int, budget: int, settings: dict[str, Any]) -> None:
    """Regret of TPE+ASHA at 1/4, 1/2 and 1 budget with and without a warm start: seed s starts
    from the finished trials of an earlier full-budget search of the same space (seed s + 10000),
    as ``search.warm_start`` adds them; only trials the new search trains count for its regret."""
    method = METHODS[0]
    cold = [replay(table, method, seed, budget, settings) for seed in range(seeds)]
    earlier = [replay(table, method, seed + 10000, budget, settings) for seed in range(seeds)]
    warm = [
        replay(table, method, seed, budget, settings, warm=[_marked(t) for t in before.finished])
        for seed, before in zip(range(seeds), earlier, strict=True)
    ]
    print("warm start (same space; TPE+ASHA; median [IQR] regret in points over the new search's own trials):")
    for name, runs in (("cold start", cold), ("warm start", warm)):
        s = Summary(method, runs, table.best(), budget)
        cells = ", ".join(f"{f:g}xB {_q(s.at(f))}" for f in s.fractions)
        print(f"  {name:11}: {cells}")


def _marked(trial: Any) -> Any:
    """A copy of an earlier search's finished trial, marked so the new run does not pass it on."""
    import copy

    marked = copy.deepcopy(trial)
    marked.user_attrs = {**marked.user_attrs, "warm": True}
    return marked


TUNING: tuple[dict[str, Any], ...] = (
    {"startup_trials": 0},
    {"startup_trials": 8},
    {"grace_epochs": 3},
    {"reduction_factor": 2},
    {"reduction_factor": 4},
    {"max_concurrent": 1},
    {"max_concurrent": 4},
)


def tune_defaults(
    table: Table, seeds: int, budget: int, reference: Summary, base: dict[str, Any], extra: list[dict[str, Any]]
) -> None:
    """TPE+ASHA with one search setting changed at a time (and any combinations asked for)."""
    default = METHODS[0]
    goal = float(np.median(reference.regret[:, -1]))
    print(
        f"\ntuning TPE+ASHA ({seeds} seeds; reference: {reference.method.name}, final median regret "
        f"{goal:.2f} pt after {budget} epochs)"
    )
    print(f"{'settings':<66}{'regret@0.25B':>18}{'regret@1B':>18}{'epochs to ref':>15}{'ratio':>7}")
    for settings in [{}, *TUNING, *extra]:
        s = run_method(table, default, seeds, budget, {**base, **settings})
        needed = s.epochs_to_median(goal)
        label = json.dumps(settings) if settings else "(current defaults)"
        print(f"{label:<66}{_q(s.at(0.25)):>18}{_q(s.at(1.0)):>18}{needed:>15g}{needed / budget:>7.2f}", flush=True)


def describe(table: Table, path: Path) -> None:
    meta = table.meta
    print(
        f"table: {len(table.curves)} grid configs + {len(table.baselines)} baselines x {table.epochs} epochs "
        f"({path.name}), best val_acc {table.best():.4f}; recorded in {meta['record_seconds'] / 60:.1f} min "
        f"({meta['machine']})"
    )
    space = SearchSpace(table.spec, table.available_stages)
    for i, pair in enumerate(space.pairs):
        mine = [k for k in table.curves if json.loads(k).get("pair", pair.label) == pair.label]
        best = max(max(table.curves[k]) for k in mine)
        base = ", ".join(
            f"{json.loads(k)['baseline']} {max(c):.4f}"
            for k, c in sorted(table.baselines.items())
            if json.loads(k)["pair"] == pair.label
        )
        grid = f"{len(mine)} grid configs, best {best:.4f}"
        print(f"  pair {i} ({pair.student.model}): {grid}; baselines (best epoch): {base}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", nargs="?", choices=["replay", "record"], default="replay")
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ofasearch-bench-search-cache")
    parser.add_argument("--limit", type=int, help="record: train at most this many configs now")
    parser.add_argument("--seeds", type=int, default=100, help="replays per method (default 100)")
    parser.add_argument(
        "--samples", type=int, nargs="+", default=list(SAMPLES), help="num_samples to replay (16 24 32)"
    )
    parser.add_argument("--tune", action="store_true", help="also replay TPE+ASHA with other search settings")
    parser.add_argument(
        "--try",
        dest="extra",
        action="append",
        type=json.loads,
        default=[],
        help="with --tune: a JSON dict of search settings to try, e.g. '{\"grace_epochs\": 2}'",
    )
    parser.add_argument("--smoke-test", action="store_true", help="3 seeds, 16 trials, for CI")
    parser.add_argument("--warm-start", action="store_true", help="only compare TPE+ASHA with and without a warm start")
    parser.add_argument(
        "--section",
        choices=["main", "searchers", "told", "rungs", "all"],
        default="main",
        help="what to replay: searchers (TPE+ASHA vs random+FIFO...), told (baselines told first or not), "
        "main (both, the default), rungs (ASHA's rung metric, about 19 min), all; --smoke-test runs all",
    )
    args = parser.parse_args()
    if args.action == "record":
        record(args.table, args.cache, args.limit)
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    table = load_table(args.table)
    seeds = 3 if args.smoke_test else args.seeds
    samples = [16] if args.smoke_test else args.samples
    describe(table, args.table)
    print(
        f"regret = table best - best full-budget val_acc the search's own trials found, in points; {seeds} seeds "
        "per row; the baselines run before every search (not counted in B)"
    )
    start = time.perf_counter()
    if args.warm_start:
        warm_start_check(table, seeds, samples[0] * table.epochs, {"num_samples": samples[0]})
        print(f"replay took {time.perf_counter() - start:.1f}s")
        return
    section = "all" if args.smoke_test else args.section
    if section in ("main", "searchers", "told", "all"):
        by_samples = compare_searchers(table, seeds, samples, {})
        references = {n: by_name["random+FIFO"] for n, by_name in by_samples.items()}
    else:
        reference = next(m for m in METHODS if m.name == "random+FIFO")
        references = {n: run_method(table, reference, seeds, n * table.epochs, {"num_samples": n}) for n in samples}
    if section in ("main", "told", "all"):
        compare_told(table, seeds, by_samples, {})
    if section in ("rungs", "all"):
        compare_rungs(table, seeds, references, {})
    print(f"replay took {time.perf_counter() - start:.1f}s")
    if args.tune and not args.smoke_test:
        n = samples[0]
        tune_defaults(table, seeds, n * table.epochs, references[n], {"num_samples": n}, args.extra)


if __name__ == "__main__":
    main()
