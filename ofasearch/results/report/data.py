"""What the report shows, computed from a results folder: the trials, the pairs and their legend
names, a colour per method or searched composition, rankings, the winner among every confirmed
candidate, gains over baselines, the Pareto front and the time spent."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ofasearch.config import Choices, Range
from ofasearch.config.registry import BASELINE_METHODS
from ofasearch.errors import SpecError
from ofasearch.results.folder import SPEC_FILE, STATE_FILE, FolderSpec, PairNames, ResultsFolder, read_folder
from ofasearch.results.outcome import is_full_budget
from ofasearch.results.ranking import (
    best_trial,
    composition_of,
    pair_baseline,
    ranked_trials,
    strongest_baseline,
    student_latency,
)
from ofasearch.results.seeds import Z95, Gain, mean_interval, paired_gain, seed_runs
from ofasearch.results.tables import EPOCHS_FILE, TRIALS_FILE
from ofasearch.utils.formatting import encode_list
from ofasearch.utils.storage import Location

__all__ = [
    "BASELINE_COLORS",
    "COLORS",
    "DECISION_LIMIT",
    "SEARCH_COLORS",
    "SEARCH_ROLES",
    "Candidate",
    "PairSummary",
    "ReportData",
    "candidate_label",
    "category",
    "decision_candidates",
    "elapsed",
    "family",
    "family_colors",
    "gains",
    "load",
    "pair_color",
    "pair_summaries",
    "pair_tags",
    "pareto_front",
    "ranked",
    "single_run_noise",
]

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
# One colour per baseline method (cool hues and grey) and warm ones for the searched compositions,
# so a searched config is never mistaken for the baseline it is compared with.
BASELINE_COLORS = {"none": "#7f7f7f", "kd": "#1f77b4", "dkd": "#2ca02c", "dist": "#9467bd"}
SEARCH_COLORS = ["#ff7f0e", "#d62728", "#e377c2", "#8c564b", "#bcbd22", "#17becf"]
OTHER_COLOR = "#555555"  # a baseline method this version has no colour for
SEARCH_ROLES = ("search",)  # the top table lists what the search tried; baselines have their own table
DECISION_LIMIT = 20  # candidates in the decision figure when none was confirmed (one run each)


@dataclass
class ReportData:
    """Everything the report needs: the folder as read once, its trials with each student's median
    latency, and a short name and colour per pair."""

    results: ResultsFolder
    trials: list[dict[str, Any]]
    pairs: list[tuple[str, str]]  # (teacher label, student label), the spec's pairs first
    tags: list[str]  # short unique names for legends, "P1: a -> b"

    @property
    def folder(self) -> Location:
        return self.results.path

    @property
    def spec(self) -> FolderSpec:
        return self.results.spec

    @property
    def state(self) -> dict[str, Any]:
        return self.results.state

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return self.results.epochs

    @property
    def max_epochs(self) -> int:
        return self.spec.max_epochs

    @property
    def searched(self) -> dict[str, Range | Choices]:
        return self.spec.searched

    @property
    def search(self) -> list[dict[str, Any]]:
        return [r for r in self.trials if r["role"] == "search"]

    def full_budget(self, row: dict[str, Any]) -> bool:
        return is_full_budget(row, self.max_epochs)

    def pair_index(self, row: dict[str, Any]) -> int:
        return self.pairs.index((row["teacher"], row["student"]))

    def color(self, row: dict[str, Any]) -> str:
        return pair_color(self.pair_index(row))

    @cached_property
    def family_colors(self) -> dict[tuple[str, str], str]:
        return family_colors(self.trials)

    def family_color(self, row: dict[str, Any]) -> str:
        """The colour of ``row``'s baseline method or searched composition (see :func:`family`)."""
        return self.family_colors.get(family(row), OTHER_COLOR)

    @cached_property
    def winner(self) -> dict[str, Any] | None:
        """What the search hands over as ``best.yaml``: the best candidate, searched config or baseline."""
        return best_trial(self.trials, self.max_epochs)

    def is_winner(self, row: dict[str, Any]) -> bool:
        return self.winner is not None and row["trial_id"] == self.winner["trial_id"]

    def has(self, column: str) -> bool:
        return any(r.get(column) is not None for r in self.trials)


def pair_color(index: int) -> str:
    return COLORS[index % len(COLORS)]


def family(row: dict[str, Any]) -> tuple[str, str]:
    """``("baseline", method)`` or ``("search", composition)``: what a row's colour stands for
    (a confirmation run belongs to the search config it repeats)."""
    if row["role"] == "baseline":
        return ("baseline", str(row["method"]))
    return ("search", composition_of(row))


def family_colors(rows: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """Every baseline method's fixed colour, and one per searched composition by name (the same
    composition keeps its colour across reports of a growing search as long as no new name sorts
    before it; past six compositions the colours repeat)."""
    colors = {("baseline", m): c for m, c in BASELINE_COLORS.items()}
    searched = sorted({composition_of(r) for r in rows if r["role"] == "search"})
    colors.update({("search", c): SEARCH_COLORS[i % len(SEARCH_COLORS)] for i, c in enumerate(searched)})
    return colors


def load(folder: str | Location) -> ReportData:
    """Read the folder; a wrong folder or one without trials is bad input (a SpecError)."""
    results = read_folder(folder)
    trials = student_latency([r for r in results.trials if r.get("trial_id")])
    if not trials:
        raise SpecError([f"{folder}: no trials yet ({TRIALS_FILE} is missing or empty)"])
    pairs = [(p.teacher, p.student) for p in results.spec.pairs]
    for r in trials:  # a pair missing from the spec (should not happen) still gets a colour
        if (r["teacher"], r["student"]) not in pairs:
            pairs.append((r["teacher"], r["student"]))
    tags = pair_tags(results.spec.pairs, pairs)
    return ReportData(results, trials, pairs, tags)


def _model_name(label: str) -> str:
    return label.split("(", 1)[0]


def pair_tags(models: list[PairNames], pairs: list[tuple[str, str]]) -> list[str]:
    """``P1: resnet18 -> vit_tiny``, plus the model kwargs that tell apart pairs sharing model names
    (two ViT students of different depths would otherwise get the same legend entry)."""
    kwargs_of = [(p.teacher_kwargs, p.student_kwargs) for p in models]
    names = [f"{_model_name(t)} \u2192 {_model_name(s)}" for t, s in pairs]
    tags = []
    for i, name in enumerate(names):
        same = [j for j, other in enumerate(names) if other == name and j < len(kwargs_of)]
        extra = ""
        if len(same) > 1 and i < len(kwargs_of):
            for side in (1, 0):  # the student's kwargs first: they usually differ
                kwargs = [kwargs_of[j][side] for j in same]
                keys = sorted({k for kw in kwargs for k in kw if len({repr(o.get(k)) for o in kwargs}) > 1})
                if keys:
                    extra = " (" + ", ".join(f"{k}={kwargs_of[i][side].get(k)}" for k in keys) + ")"
                    break
        tags.append(f"P{i + 1}: {name}{extra}")
    return tags


def category(value: Any) -> str:
    """The string a categorical value has in trials.parquet (lists are encoded: ``"1,2,3,4"``)."""
    return encode_list(value) if isinstance(value, list) else str(value)


def gains(data: ReportData, row: dict[str, Any]) -> dict[str, Gain | None]:
    """Gain of ``row`` over its pair's baselines (mean paired difference over shared seeds, in
    accuracy units: 0.01 = 1 point) with its 95 % interval; None for each when ``row`` did not
    run the full budget (an early-stopped score is not compared with a full-budget baseline)."""
    val_images = data.state.get("val_images")
    out: dict[str, Gain | None] = {}
    for method in BASELINE_METHODS:
        base = pair_baseline(data.trials, row, method)
        if base is None or base["trial_id"] == row["trial_id"]:  # a baseline is not compared with itself
            out[method] = None
            continue
        out[method] = paired_gain(data.trials, row, base, val_images, max_epochs=data.max_epochs)
    return out


def ranked(data: ReportData) -> list[dict[str, Any]]:
    """Search configs only (baselines have their own table): the full-budget ranking, confirmed
    ones by their mean over seeds, then the others by val_acc."""
    full = ranked_trials(data.trials, data.max_epochs, roles=SEARCH_ROLES)  # confirmation rows give the means
    ids = {r["trial_id"] for r in full}
    rest = sorted((r for r in data.search if r["trial_id"] not in ids), key=lambda r: -(r["val_acc"] or 0.0))
    return full + rest


def single_run_noise(accuracy: float, val_images: int | None) -> float | None:
    """Half-width of the 95 % binomial interval of one accuracy measured on ``val_images`` images
    (the validation set's own noise, a floor under the spread over seeds); None when unknown."""
    if not val_images:
        return None
    return Z95 * math.sqrt(accuracy * (1.0 - accuracy) / val_images)


@dataclass(frozen=True)
class Candidate:
    """One candidate of the decision: a full-budget searched config or baseline, its accuracy on
    each seed it ran, and the 95 % t-interval of its mean over those seeds."""

    row: dict[str, Any]
    label: str  # composition, "(baseline)" for baselines, the pair when the search has several
    accuracies: list[float]  # one per seed, in seed order
    mean: float
    half_width: float | None  # None: one run, no interval over seeds
    winner: bool

    @property
    def seeds(self) -> int:
        return len(self.accuracies)

    @property
    def baseline(self) -> bool:
        return self.row["role"] == "baseline"


def candidate_label(data: ReportData, row: dict[str, Any]) -> str:
    """``dist (baseline)`` or ``ofa + ofa@3,4``, prefixed ``P2 · `` when several pairs compete."""
    name = composition_of(row) + (" (baseline)" if row["role"] == "baseline" else "")
    return f"P{data.pair_index(row) + 1} \u00b7 {name}" if len(data.pairs) > 1 else name


def decision_candidates(data: ReportData, limit: int = DECISION_LIMIT) -> tuple[list[Candidate], int]:
    """The candidates the winner was chosen from, best first, and how many there are: those
    confirmed on several seeds, or when none was, every full-budget one (the best ``limit``)."""
    ranked_all = ranked_trials(data.trials, data.max_epochs)
    confirmed = [r for r in ranked_all if r["seeds"] >= 2]
    rows = confirmed or ranked_all[:limit]
    out = []
    for r in rows:
        runs = seed_runs(data.trials, r).accuracies
        accuracies = [runs[s] for s in sorted(runs)] or [float(r["val_acc_mean"])]
        winner = data.is_winner(r)
        out.append(
            Candidate(
                r, candidate_label(data, r), accuracies, float(r["val_acc_mean"]), mean_interval(accuracies), winner
            )
        )
    return out, len(confirmed or ranked_all)


def pareto_front(points: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """Points no other point beats on both latency (lower) and accuracy (higher), by latency."""
    front: list[tuple[float, float, Any]] = []
    for lat, acc, tag in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((lat, acc, tag))
    return front


def elapsed(data: ReportData) -> tuple[float, float, float]:
    """Seconds of wall clock (0 when unknown), of trial training summed, and of teachers trained
    for this search."""
    files = [data.folder / n for n in (TRIALS_FILE, EPOCHS_FILE, STATE_FILE)]
    start = data.state.get("started_at") or (data.folder / SPEC_FILE).stat().st_mtime
    end = data.state.get("finished_at") or max(p.stat().st_mtime for p in files if p.is_file())
    compute = sum(r["seconds"] or 0.0 for r in data.trials)
    teachers = sum(
        (t.get("info") or {}).get("train_seconds") or 0.0
        for t in data.state.get("teachers") or []
        if (t.get("info") or {}).get("trained_now")
    )
    return end - start, compute, teachers


@dataclass(frozen=True)
class PairSummary:
    """One row of the teachers-and-baselines table: what each pair's teacher and students reached."""

    tag: str
    teacher_val_acc: float | None
    teacher_test_acc: float | None
    teacher_source: str  # "trained for this search", "from the cache" or "" (not prepared yet)
    alone_val_acc: float | None  # the student trained without a teacher
    kd_val_acc: float | None  # vanilla KD
    dkd_val_acc: float | None
    dist_val_acc: float | None
    strongest: str | None  # the method of the baseline with the highest mean accuracy over seeds
    best_search_val_acc: float | None  # the pair's best full-budget searched config (mean over its seeds)


def pair_summaries(data: ReportData) -> list[PairSummary]:
    """Per pair, the teacher (from state.json) beside its student's baselines and best searched config."""
    teachers = data.state.get("teachers") or []
    searched = ranked_trials(data.trials, data.max_epochs, roles=SEARCH_ROLES)
    out = []
    for i, (t, s) in enumerate(data.pairs):
        info = (teachers[i].get("info") or {}) if i < len(teachers) and teachers[i] else {}
        row = {"teacher": t, "student": s}
        base = {m: pair_baseline(data.trials, row, m) for m in BASELINE_METHODS}
        strongest = strongest_baseline(data.trials, row)
        best = next((r for r in searched if (r["teacher"], r["student"]) == (t, s)), None)
        out.append(
            PairSummary(
                tag=data.tags[i],
                teacher_val_acc=info.get("val_acc"),
                teacher_test_acc=info.get("test_acc"),
                teacher_source="trained for this search"
                if info.get("trained_now")
                else "from the cache"
                if info
                else "",
                alone_val_acc=base["none"]["val_acc"] if base["none"] else None,
                kd_val_acc=base["kd"]["val_acc"] if base["kd"] else None,
                dkd_val_acc=base["dkd"]["val_acc"] if base["dkd"] else None,
                dist_val_acc=base["dist"]["val_acc"] if base["dist"] else None,
                strongest=strongest["method"] if strongest else None,
                best_search_val_acc=best["val_acc_mean"] if best else None,
            )
        )
    return out
