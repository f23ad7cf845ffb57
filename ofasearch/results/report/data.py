"""What the report shows, computed from a results folder: the trials, the pairs and their legend
names, rankings, gains over baselines, the Pareto front and the time spent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ofasearch.config import Choices, Range
from ofasearch.config.registry import BASELINE_METHODS
from ofasearch.errors import SpecError
from ofasearch.results.folder import SPEC_FILE, STATE_FILE, FolderSpec, PairNames, ResultsFolder, read_folder
from ofasearch.results.outcome import is_full_budget
from ofasearch.results.ranking import pair_baseline, ranked_trials, strongest_baseline, student_latency
from ofasearch.results.seeds import Gain, paired_gain
from ofasearch.results.tables import EPOCHS_FILE, TRIALS_FILE
from ofasearch.utils.formatting import encode_list
from ofasearch.utils.storage import Location

__all__ = [
    "COLORS",
    "PairSummary",
    "ReportData",
    "category",
    "elapsed",
    "gains",
    "load",
    "pair_color",
    "pair_summaries",
    "pair_tags",
    "pareto_front",
    "ranked",
]

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


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

    def has(self, column: str) -> bool:
        return any(r.get(column) is not None for r in self.trials)


def pair_color(index: int) -> str:
    return COLORS[index % len(COLORS)]


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
        out[method] = (
            None if base is None else paired_gain(data.trials, row, base, val_images, max_epochs=data.max_epochs)
        )
    return out


def ranked(data: ReportData) -> list[dict[str, Any]]:
    """Search trials: the full-budget ranking of ``ofasearch export``, then the others by val_acc."""
    full = ranked_trials(data.trials, data.max_epochs)  # confirmation rows give the means
    ids = {r["trial_id"] for r in full}
    rest = sorted((r for r in data.search if r["trial_id"] not in ids), key=lambda r: -(r["val_acc"] or 0.0))
    return full + rest


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
    best_ofa_val_acc: float | None  # best full-budget OFA search trial


def pair_summaries(data: ReportData) -> list[PairSummary]:
    """Per pair, the teacher (from state.json) beside its student's baselines and best OFA trial."""
    teachers = data.state.get("teachers") or []
    out = []
    for i, (t, s) in enumerate(data.pairs):
        info = (teachers[i].get("info") or {}) if i < len(teachers) and teachers[i] else {}
        row = {"teacher": t, "student": s}
        base = {m: pair_baseline(data.trials, row, m) for m in BASELINE_METHODS}
        strongest = strongest_baseline(data.trials, row)
        ofa = [r for r in data.search if (r["teacher"], r["student"]) == (t, s) and data.full_budget(r)]
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
                best_ofa_val_acc=max((r["val_acc"] or 0.0 for r in ofa), default=None),
            )
        )
    return out
