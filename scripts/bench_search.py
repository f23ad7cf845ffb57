"""Replay benchmark of the searcher: does TPE+ASHA find good configs with fewer epochs than random?

Training is too slow to run a search dozens of times, so a grid of configs (a discrete version
of the test spec's space: digits at 16 px, resnet10t teacher, tiny ViT and Mixer students) is
trained once, every config to the full budget, and its per-epoch validation curves are stored
in ``scripts/data/bench_search.parquet``. Replay then drives the product's own search path
(``build_searcher``, ``build_scheduler``, the enqueued paper defaults) many times with training
replaced by a lookup into that table, so searchers are compared over seeds at no training cost.

    python scripts/bench_search.py record      # train the grid (resumable; 14 min on 2 cores)
    python scripts/bench_search.py             # replay: 5 methods x 100 seeds (15 s)
    python scripts/bench_search.py --tune      # also a few values of each search default (2 min)
    python scripts/bench_search.py --smoke-test  # 3 seeds, seconds, for CI
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import optuna
import pyarrow as pa
import pyarrow.parquet as pq
from optuna.trial import TrialState

from ofasearch.config import Choices, Spec, TrainConfig
from ofasearch.search.searcher import METRIC, PROPOSED_BY, build_scheduler, build_searcher
from ofasearch.search.space import SearchSpace, encode
from ofasearch.search.trial import trial_config

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "scripts" / "data" / "bench_search.parquet"
META_KEY = b"bench_search"  # the Parquet schema-metadata key of the recording's JSON description

VIT = {"model": "vit_tiny_patch16_224", "kwargs": {"patch_size": 4, "embed_dim": 48, "depth": 4, "num_heads": 2}}
MIXER = {"model": "MlpMixer", "kwargs": {"patch_size": 4, "num_blocks": 2, "embed_dim": 48}}
TEACHER = {"model": "resnet10t", "checkpoint": "auto", "recipe": {"epochs": 4, "batch_size": 64}}
# tests/specs.py SPEC made discrete: every searched value is a list of choices, so every proposal
# is a table point. lr's first choice is the test spec's range's default (its geometric mean:
# SearchSpace.defaults takes choices[0] for a value the paper does not fix); 0.01 is added
# because the Mixer still gains from it in 6 epochs (the ViT's best is 0.005).
# val_fraction 0.25 (450 images): one image is 0.22 points, finer than the 0.5-point target.
GRID_SPEC: dict[str, Any] = {
    "name": "bench-search",
    "seed": 0,
    "data": {"dataset": "digits", "image_size": 16, "val_fraction": 0.25},
    "pairs": [{"teacher": TEACHER, "student": VIT}, {"teacher": TEACHER, "student": MIXER}],
    "distill": {
        "stages": {"choices": [[1, 2, 3, 4], [3, 4], [4]]},
        "eps": {"choices": [1.0, 1.25, 1.5]},
        "temperature": {"choices": [1.0, 2.0, 3.0]},
    },
    "optim": {"lr": {"choices": [0.002236, 0.001, 0.005, 0.01]}, "epochs": 6, "batch_size": 64},
    "search": {"num_samples": 16, "reduction_factor": 3, "max_concurrent": 2},  # grace: the product's default
}
WITHIN = 0.005  # "found the best": within half a point of the table's best
NOTHING_FOUND = 0.0  # best val_acc before any full-budget trial finished (regret = the table best)


# ---------------------------------------------------------------------------------------- table
@dataclass
class Table:
    """The recorded curves: ``curves[key]`` is a config's val_acc per epoch (1..max)."""

    spec: Spec
    available_stages: list[list[int]]
    curves: dict[str, list[float]]
    meta: dict[str, Any]

    @property
    def epochs(self) -> int:
        return self.spec.optim.epochs

    def best(self) -> float:
        """The best any config reaches, ranked as the product ranks a trial (its best epoch)."""
        return max(max(curve) for curve in self.curves.values())


def config_key(config: TrainConfig, paths: list[str]) -> str:
    """A config's identity in the table: its pair and the value of every searched path."""
    values = [getattr(getattr(config, section), key) for section, key in (p.split(".", 1) for p in paths)]
    return json.dumps([config.pair.label, *values])


def grid_points(space: SearchSpace) -> Iterator[dict[str, Any]]:
    """Every Optuna params dict of the discrete space (each pair's own stage choices)."""
    searched = space.spec.searched_values()
    for pair in range(len(space.pairs)):
        axes: list[tuple[str, list[Any]]] = []
        for path, dist in searched.items():
            assert isinstance(dist, Choices), f"{path}: the benchmark's space must be discrete"
            choices = dist.choices
            if path == "distill.stages":
                choices = [c for c in choices if set(c) <= set(space.available_stages[pair])]
            axes.append((space.param_name(path, pair), [encode(c) for c in choices]))
        for values in itertools.product(*(c for _, c in axes)):
            point = {"pair": space.pairs[pair].label} if len(space.pairs) > 1 else {}
            yield {**point, **dict(zip([name for name, _ in axes], values, strict=True))}


def load_table(path: Path = TABLE) -> Table:
    """The shipped recording with the spec it was recorded from (kept in the file's metadata)."""
    data = pq.read_table(path)
    meta = json.loads(data.schema.metadata[META_KEY])
    curves: dict[str, list[float]] = {}
    for row in sorted(data.to_pylist(), key=lambda r: (r["key"], r["epoch"])):
        curves.setdefault(row["key"], []).append(row["val_acc"])
    spec = Spec.model_validate(meta["spec"])
    return Table(spec, meta["available_stages"], curves, meta)


# ------------------------------------------------------------------------------------- record
def _curve_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """What a recorded curve depends on: everything but the search settings (each grid config
    trains to the full budget), so a table stays valid when the searcher's defaults change."""
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


def record(path: Path, cache: Path, limit: int | None) -> None:
    """Train every grid config to the full budget with ``ofasearch train`` (the product's stable
    contract) and append its curve to the table; configs already in the table are skipped."""
    os.environ["OFASEARCH_CACHE"] = str(cache)  # the teacher is trained once, its logits reused
    from ofasearch.cli import main as ofasearch_main
    from ofasearch.search.plan import plan

    spec = Spec.model_validate(GRID_SPEC)
    space = plan(spec)
    paths = list(spec.searched_values())
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"record_seconds": 0.0, "session_seconds": []}
    session_start = time.perf_counter()
    if path.exists():
        rows, meta = pq.read_table(path).to_pylist(), json.loads(pq.read_table(path).schema.metadata[META_KEY])
        if _curve_settings(meta["spec"]) != _curve_settings(GRID_SPEC):
            sys.exit(f"{path} was recorded from another grid; move it away to record this one")
    done = {r["key"] for r in rows}
    points = list(grid_points(space))
    meta.update(
        spec=GRID_SPEC,
        available_stages=space.available_stages,
        command=f"nice -n {os.nice(0)} python scripts/bench_search.py {' '.join(sys.argv[1:])}",
        software=software_versions(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {_threads()}",
        configs=len(points),
    )
    meta.setdefault("session_seconds", []).append(0.0)
    todo = [p for p in points if config_key(trial_config(space, p), paths) not in done][:limit]
    print(f"{len(points)} configs in the grid, {len(done)} recorded, {len(todo)} to train", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n, params in enumerate(todo, 1):
            config = trial_config(space, params)
            key = config_key(config, paths)
            yaml_path, out = Path(tmp) / "config.yaml", Path(tmp) / f"run{n}"
            yaml_path.write_text(config.to_yaml())
            start = time.perf_counter()
            code = ofasearch_main(["train", str(yaml_path), "--output", str(out), "--no-progress"])
            seconds = time.perf_counter() - start
            if code != 0:
                sys.exit(f"ofasearch train failed ({code}) for {key}")
            history = json.loads((out / "metrics.json").read_text())["history"]
            for h in history:
                rows.append(
                    {
                        "key": key,
                        "student": config.pair.student.label,
                        **{p: json.dumps(v) if isinstance(v, list) else v for p, v in _values(config, paths).items()},
                        "epoch": h["epoch"],
                        "val_acc": h["val_acc"],
                        "epoch_seconds": h["seconds"],
                        "run_seconds": seconds,
                    }
                )
            meta["record_seconds"] += seconds
            meta["session_seconds"][-1] = time.perf_counter() - session_start
            _write_table(rows, meta, path)
            print(f"[{len(done) + n}/{len(points)}] {key}: {history[-1]['val_acc']:.4f} in {seconds:.1f}s", flush=True)
    _write_table(rows, meta, path)
    print(f"table: {path} ({path.stat().st_size / 1024:.0f} KiB, {len(rows)} rows)")


def _values(config: TrainConfig, paths: list[str]) -> dict[str, Any]:
    return {p: getattr(getattr(config, p.split(".")[0]), p.split(".")[1]) for p in paths}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# ------------------------------------------------------------------------------------- replay
@dataclass(frozen=True)
class Method:
    """A way to search: which proposer, whether ASHA stops trials, or only the paper defaults."""

    name: str
    searcher: str  # tpe | random
    asha: bool
    defaults_only: bool = False


METHODS = (
    Method("TPE+ASHA (default)", "tpe", asha=True),
    Method("random+ASHA", "random", asha=True),
    Method("random+FIFO", "random", asha=False),
    Method("TPE+FIFO", "tpe", asha=False),
    Method("paper defaults only", "tpe", asha=False, defaults_only=True),
)


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


def replay(
    table: Table, method: Method, seed: int, budget: int, settings: dict[str, Any], warm: list[Any] | None = None
) -> Run:
    """Drive the product's searcher (and ASHA) as Ray Tune does, training replaced by the table.

    Up to ``max_concurrent`` trials run at once, one epoch each in turn (launch order), so the
    interleaving is deterministic. Per result, as Tune's controller: the scheduler decides first;
    the searcher sees the result only if the trial continues; a stopped or finished trial is
    completed in the scheduler, then in the searcher. New trials start until ``budget`` epochs are
    spent (ASHA methods thereby run more than ``num_samples`` trials for the same epochs)."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    spec = replay_spec(table, method, seed, settings)
    space = SearchSpace(spec, table.available_stages)
    searcher = build_searcher(spec, space)
    scheduler = build_scheduler(spec) if method.asha else FIFOScheduler()
    scheduler.set_search_properties(METRIC, "max")
    paths = list(spec.searched_values())
    max_trials = searcher.defaults if method.defaults_only else math.inf
    running: list[ReplayTrial] = []
    trials: list[ReplayTrial] = []
    curve: list[tuple[int, float]] = []
    spent, best = 0, NOTHING_FOUND
    for finished in warm or []:  # a warm start from the same space: what warm_start() adds from a folder
        searcher.study.add_trial(finished)
    while spent < budget:
        while len(running) < spec.search.max_concurrent and len(trials) < max_trials:
            trial_id = f"{len(trials):05d}"
            params = searcher.suggest(trial_id)
            proposer = params.pop(PROPOSED_BY)
            key = config_key(trial_config(space, params), paths)
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
            result = {"epoch": trial.epoch, "training_iteration": trial.epoch, METRIC: curve_so_far[-1]}
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
    return Run(curve, trials, spent, [t for t in done if "warm" not in t.user_attrs])


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """25th, 50th and 75th percentile (linear); an infinite value ("never") stays infinite."""
    data = sorted(values)

    def at(q: float) -> float:
        pos = q * (len(data) - 1)
        low, high = data[math.floor(pos)], data[math.ceil(pos)]
        return low if low == high else low + (high - low) * (pos - math.floor(pos))

    return at(0.25), at(0.5), at(0.75)


@dataclass
class Summary:
    """One method's replays over seeds, reduced to what the benchmark prints."""

    method: Method
    runs: list[Run]
    table_best: float
    budget: int
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    regret: dict[float, tuple[float, float, float]] = field(default_factory=dict)
    to_best: tuple[float, float, float] = (math.inf, math.inf, math.inf)
    never: int = 0

    def __post_init__(self) -> None:
        for f in self.fractions:
            self.regret[f] = quartiles([self.regret_at(run, round(f * self.budget)) for run in self.runs])
        reach = [run.epochs_to_reach(self.table_best - WITHIN) for run in self.runs]
        self.to_best, self.never = quartiles(reach), sum(math.isinf(r) for r in reach)

    def regret_at(self, run: Run, epochs: int) -> float:
        """Regret in accuracy points: the table's best minus the best found within ``epochs``."""
        return 100 * (self.table_best - run.best_by(epochs))

    def median_regret_curve(self) -> list[float]:
        """Median regret over seeds after 0, 1, ..., budget epochs."""
        return [quartiles([self.regret_at(run, e) for run in self.runs])[1] for e in range(self.budget + 1)]

    def epochs_to_median(self, regret: float) -> float:
        """Fewest epochs after which the median regret is at most ``regret`` (inf: not within the budget)."""
        return next((e for e, r in enumerate(self.median_regret_curve()) if r <= regret + 1e-9), math.inf)


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
        cells = ", ".join(f"{f:g}xB {_iqr(s.regret[f])}" for f in s.fractions)
        print(f"  {name:11}: {cells}")


def _marked(trial: Any) -> Any:
    """A copy of an earlier search's finished trial, marked so the new run does not pass it on."""
    import copy

    marked = copy.deepcopy(trial)
    marked.user_attrs = {**marked.user_attrs, "warm": True}
    return marked


def run_method(table: Table, method: Method, seeds: int, budget: int, settings: dict[str, Any]) -> Summary:
    runs = [replay(table, method, seed, budget, settings) for seed in range(seeds)]
    return Summary(method, runs, table.best(), budget)


def _iqr(q: tuple[float, float, float], digits: int = 2) -> str:
    def show(v: float) -> str:
        return "never" if math.isinf(v) else f"{v:.{digits}f}"

    return f"{show(q[1])} [{show(q[0])}, {show(q[2])}]"


def print_summaries(summaries: list[Summary], budget: int) -> None:
    head = [f"regret@{f:g}x ({round(f * budget)} ep)" for f in summaries[0].fractions]
    print(
        f"{'method':<22}" + "".join(f"{h:>22}" for h in head) + f"{'epochs to <=0.5 pt':>24}{'never':>7}{'trials':>8}"
    )
    for s in summaries:
        cells = "".join(f"{_iqr(s.regret[f]):>22}" for f in s.fractions)
        trials = statistics.median(len(r.trials) for r in s.runs)
        print(f"{s.method.name:<22}{cells}{_iqr(s.to_best, 0):>24}{s.never:>7}{trials:>8g}")


def target_check(default: Summary, reference: Summary) -> float:
    """Epochs the default needs to reach the reference's final median regret, over the reference's epochs."""
    goal = reference.regret[1.0][1]
    needed = default.epochs_to_median(goal)
    ratio = needed / reference.budget
    verdict = "MET" if ratio <= 1 / 3 else "NOT met"
    needed_text = "not within the budget" if math.isinf(needed) else f"{needed:g} epochs"
    print(
        f"target (<= 1/3): {default.method.name} reaches {reference.method.name}'s final median regret "
        f"({goal:.2f} pt after {reference.budget} epochs) in {needed_text}: ratio {ratio:.2f} -> {verdict}"
    )
    return ratio


def proposers(summary: Summary) -> str:
    counts: dict[str, int] = {}
    for run in summary.runs:
        for trial in run.trials:
            counts[trial.proposed_by] = counts.get(trial.proposed_by, 0) + 1
    return ", ".join(f"{name} {n / len(summary.runs):.1f}" for name, n in sorted(counts.items()))


TUNING: tuple[dict[str, Any], ...] = (
    {"startup_trials": 0},
    {"startup_trials": 2},  # = the paper defaults only: Optuna counts them as start-up trials
    {"startup_trials": 8},
    {"grace_epochs": 3},
    {"reduction_factor": 2},
    {"reduction_factor": 4},
    {"max_concurrent": 1},
    {"max_concurrent": 4},
    {"startup_trials": 2, "reduction_factor": 4, "max_concurrent": 1},  # the best found on the shipped table
)


def tune_defaults(
    table: Table, seeds: int, budget: int, reference: Summary, base: dict[str, Any], extra: list[dict[str, Any]]
) -> None:
    """TPE+ASHA with one search setting changed at a time (and any combinations asked for)."""
    default = METHODS[0]
    print(
        f"\ntuning TPE+ASHA ({seeds} seeds; reference: {reference.method.name}, final median regret "
        f"{reference.regret[1.0][1]:.2f} pt after {budget} epochs)"
    )
    print(f"{'settings':<66}{'regret@0.25x':>18}{'regret@1x':>18}{'epochs to ref':>15}{'ratio':>7}")
    for settings in [{}, *TUNING, *extra]:
        s = run_method(table, default, seeds, budget, {**base, **settings})
        needed = s.epochs_to_median(reference.regret[1.0][1])
        label = json.dumps(settings) if settings else "(current defaults)"
        print(
            f"{label:<66}{_iqr(s.regret[0.25]):>18}{_iqr(s.regret[1.0]):>18}{needed:>15g}{needed / budget:>7.2f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", nargs="?", choices=["replay", "record"], default="replay")
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ofasearch-bench-search-cache")
    parser.add_argument("--limit", type=int, help="record: train at most this many configs now")
    parser.add_argument("--seeds", type=int, default=100, help="replays per method (default 100)")
    parser.add_argument("--num-samples", type=int, help="search.num_samples (default: the recorded spec's)")
    parser.add_argument("--tune", action="store_true", help="also replay TPE+ASHA with other search settings")
    parser.add_argument(
        "--try",
        dest="extra",
        action="append",
        type=json.loads,
        default=[],
        help="with --tune: a JSON dict of search settings to try, e.g. '{\"grace_epochs\": 2}'",
    )
    parser.add_argument("--smoke-test", action="store_true", help="3 seeds, for CI")
    parser.add_argument("--warm-start", action="store_true", help="only compare TPE+ASHA with and without a warm start")
    args = parser.parse_args()
    if args.action == "record":
        record(args.table, args.cache, args.limit)
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    table = load_table(args.table)
    seeds = 3 if args.smoke_test else args.seeds
    settings = {"num_samples": args.num_samples} if args.num_samples else {}
    num_samples = args.num_samples or table.spec.search.num_samples
    budget = num_samples * table.epochs
    meta = table.meta
    print(
        f"table: {len(table.curves)} configs x {table.epochs} epochs ({args.table.name}), best val_acc "
        f"{table.best():.4f}; recorded in {meta['record_seconds'] / 60:.1f} min ({meta['machine']})"
    )
    print(
        f"budget B = {budget} epochs (random+FIFO's num_samples {num_samples} x {table.epochs} epochs); "
        f"{seeds} seeds per method; regret = table best - best full-budget val_acc found, in points; "
        "median [IQR]"
    )
    start = time.perf_counter()
    if args.warm_start:
        warm_start_check(table, seeds, budget, settings)
        print(f"replay took {time.perf_counter() - start:.1f}s")
        return
    summaries = [run_method(table, m, seeds, budget, settings) for m in METHODS]
    print_summaries(summaries, budget)
    for s in summaries:
        print(f"  {s.method.name}: trials per search by proposer: {proposers(s)}")
    by_name = {s.method.name: s for s in summaries}
    target_check(summaries[0], by_name["random+FIFO"])
    print(f"replay took {time.perf_counter() - start:.1f}s")
    if args.tune and not args.smoke_test:
        tune_defaults(table, seeds, budget, by_name["random+FIFO"], settings, args.extra)


if __name__ == "__main__":
    main()
