"""``ofasearch report``: one self-contained HTML page that explains a finished (or running) search.

The page is meant to be mailed around or opened from a cluster's shared disk, so it has no
external references: every plot is a base64 PNG inside the page and the CSS is inline. The same
PNGs are also written to ``<folder>/report/`` for slides. It only reads the experiment folder
(``spec.yaml``, ``state.json``, ``trials.parquet``, ``epochs.parquet``), never Ray's state, so it
works on a copied folder and while a search still runs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ofasearch.config import Choices, Range, Spec
from ofasearch.errors import SpecError
from ofasearch.results.tables import (
    best_trial,
    load_folder_spec,
    pair_baseline,
    ranked_trials,
    read_rows,
    status_counts,
    student_latency,
)
from ofasearch.search.space import encode

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["write_report"]

logger = logging.getLogger(__name__)

PLOT_NAMES = ("learning_curves", "searched_values", "importance", "pareto")
FINISHED = ("completed", "stopped")
BROKEN = ("diverged", "error")
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


# --------------------------------------------------------------------------- reading the folder


@dataclass
class _Run:
    """Everything the report needs, read once from the experiment folder."""

    folder: Path
    spec: Spec
    state: dict[str, Any]
    trials: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (teacher label, student label)
    tags: list[str] = field(default_factory=list)  # short unique names for legends, "P1: a -> b"

    @property
    def max_epochs(self) -> int:
        return int(self.spec.optim.epochs)

    @property
    def searched(self) -> dict[str, Range | Choices]:
        return self.spec.searched_values()

    @property
    def search(self) -> list[dict[str, Any]]:
        return [r for r in self.trials if r["role"] == "search"]

    def full_budget(self, row: dict[str, Any]) -> bool:
        return row["status"] == "completed" and (row["epochs"] or 0) >= self.max_epochs

    def pair_index(self, row: dict[str, Any]) -> int:
        return self.pairs.index((row["teacher"], row["student"]))

    def color(self, row: dict[str, Any]) -> str:
        return COLORS[self.pair_index(row) % len(COLORS)]

    def has(self, column: str) -> bool:
        return any(r.get(column) is not None for r in self.trials)


def _load(folder: Path) -> _Run:
    """Read the folder; a wrong folder or one without trials is bad input (a SpecError)."""
    spec = load_folder_spec(folder)
    state_path = folder / "state.json"
    try:
        state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    except json.JSONDecodeError as exc:
        raise SpecError([f"{state_path}: invalid JSON ({exc})"]) from None
    trials = student_latency([r for r in read_rows(folder / "trials.parquet") if r.get("trial_id")])
    if not trials:
        raise SpecError([f"{folder}: no trials yet (trials.parquet is missing or empty)"])
    run = _Run(folder, spec, state, trials, read_rows(folder / "epochs.parquet"))
    run.pairs = [(p.teacher.label, p.student.label) for p in spec.pairs or []]
    for r in trials:  # a pair missing from the spec (should not happen) still gets a colour
        if (r["teacher"], r["student"]) not in run.pairs:
            run.pairs.append((r["teacher"], r["student"]))
    run.tags = _pair_tags(spec, run.pairs)
    return run


# --------------------------------------------------------------------------- small helpers


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _model_name(label: str) -> str:
    return label.split("(", 1)[0]


def _pair_tag(run: _Run, i: int) -> str:
    return run.tags[i]


def _pair_tags(spec: Spec, pairs: list[tuple[str, str]]) -> list[str]:
    """``P1: resnet18 -> vit_tiny``, plus the model kwargs that tell apart pairs sharing model names
    (two ViT students of different depths would otherwise get the same legend entry)."""
    models = [(p.teacher, p.student) for p in spec.pairs or []]
    short = [f"{_model_name(t)} \u2192 {_model_name(s)}" for t, s in pairs]
    tags = []
    for i, name in enumerate(short):
        same = [j for j, other in enumerate(short) if other == name and j < len(models)]
        extra = ""
        if len(same) > 1 and i < len(models):
            for side in (1, 0):  # the student's kwargs first: they usually differ
                kwargs = [models[j][side].kwargs for j in same]
                keys = sorted({k for kw in kwargs for k in kw if len({repr(o.get(k)) for o in kwargs}) > 1})
                if keys:
                    extra = " (" + ", ".join(f"{k}={models[i][side].kwargs.get(k)}" for k in keys) + ")"
                    break
        tags.append(f"P{i + 1}: {name}{extra}")
    return tags


def _fmt_value(value: Any) -> str:
    if value is None:
        return "\u2013"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _fmt_count(value: Any, unit: str) -> str:
    if value is None:
        return "\u2013"
    value = float(value)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= div:
            return f"{value / div:.3g} {suffix}{unit}"
    return f"{value:.3g} {unit}"


def _category(value: Any) -> str:
    """The string a categorical value has in trials.parquet (lists are encoded, see space.encode)."""
    return str(encode(value)) if isinstance(value, list) else str(value)


def _gains(run: _Run, row: dict[str, Any]) -> dict[str, float | None]:
    """Accuracy gain of ``row`` over its pair's baselines, in accuracy units (0.01 = 1 point)."""
    out: dict[str, float | None] = {}
    for method in ("none", "kd"):
        base = pair_baseline(run.trials, row, method)
        out[method] = None if base is None else (row["val_acc"] or 0.0) - (base["val_acc"] or 0.0)
    return out


def _ranked(run: _Run) -> list[dict[str, Any]]:
    """Search trials: the full-budget ranking of ``ofasearch export``, then the others by val_acc."""
    ranked = ranked_trials(run.search, run.max_epochs)
    ids = {r["trial_id"] for r in ranked}
    rest = sorted((r for r in run.search if r["trial_id"] not in ids), key=lambda r: -(r["val_acc"] or 0.0))
    return ranked + rest


# --------------------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Figure:
    # Figures attached to an Agg canvas directly, without pyplot: no global backend switch or
    # figure registry is touched (the report may run inside a user's notebook or a Ray driver).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _plot_learning_curves(run: _Run) -> bytes:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    curves: dict[str, list[tuple[int, float]]] = {}
    for e in run.epochs:
        if e.get("val_acc") is not None:
            curves.setdefault(e["trial_id"], []).append((int(e["epoch"]), float(e["val_acc"])))
    fig = _figure(9, 6)
    ax = fig.add_subplot()
    styles = {"none": "--", "kd": "-."}
    for row in run.trials:
        points = sorted(curves.get(row["trial_id"], []))
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        baseline = row["role"] == "baseline"
        ax.plot(
            xs,
            ys,
            color=run.color(row),
            linestyle=styles.get(row["method"], "--") if baseline else ":" if row["status"] in BROKEN else "-",
            linewidth=1.8 if baseline else 1.2,
            alpha=0.95 if baseline else 0.75,
            marker=".",
            markersize=4,
        )
        marker = {"stopped": ("x", run.color(row), 9), "diverged": ("v", "red", 9), "error": ("X", "black", 9)}
        if row["status"] in marker:
            m, c, s = marker[row["status"]]
            ax.plot(xs[-1], ys[-1], marker=m, color=c, markersize=s, markeredgewidth=2, linestyle="none")
    best = best_trial(run.trials, run.max_epochs)
    if best is not None and curves.get(best["trial_id"]):
        ep, acc = max(curves[best["trial_id"]], key=lambda p: p[1])
        ax.plot(ep, acc, marker="*", color="gold", markeredgecolor="black", markersize=15, linestyle="none")
    handles = [
        Line2D([], [], color=COLORS[i % len(COLORS)], linewidth=3, label=_pair_tag(run, i))
        for i in range(len(run.pairs))
    ]
    handles += [
        Line2D([], [], color="grey", linestyle="-", label="OFA search trial"),
        Line2D([], [], color="grey", linestyle="--", linewidth=1.8, label="baseline: student alone"),
        Line2D([], [], color="grey", linestyle="-.", linewidth=1.8, label="baseline: vanilla KD"),
        Line2D([], [], color="grey", marker="x", markeredgewidth=2, linestyle="none", label="stopped by ASHA"),
        Line2D([], [], color="red", marker="v", linestyle=":", label="diverged (NaN loss), dotted"),
        Line2D([], [], color="black", marker="X", linestyle=":", label="error, dotted"),
        Line2D(
            [],
            [],
            color="gold",
            marker="*",
            markeredgecolor="black",
            markersize=12,
            linestyle="none",
            label="best full-budget trial",
        ),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_xlim(0.8, run.max_epochs + 0.2)
    ax.grid(alpha=0.3)
    ax.set_title("Validation accuracy per epoch")
    return _png(fig)


def _log_axis(ax: Axes) -> None:
    """A log x-axis labelled 1, 2, 5 per decade in plain numbers (ranges often span < 1 decade)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _plot_searched_values(run: _Run) -> bytes:
    from matplotlib.lines import Line2D

    searched = list(run.searched.items())
    cols = min(3, len(searched))
    rows = math.ceil(len(searched) / cols)
    fig = _figure(4.3 * cols, 3.3 * rows + 0.5)
    trials = [r for r in run.search if r["status"] != "running" and r.get("val_acc") is not None]
    for n, (path, dist) in enumerate(searched):
        ax = fig.add_subplot(rows, cols, n + 1)
        categories: list[str] = []
        if isinstance(dist, Choices):
            categories = [_category(c) for c in dist.choices]
            categories += sorted({_category(r[path]) for r in trials if r.get(path) is not None} - set(categories))
        for i, r in enumerate(trials):
            value = r.get(path)
            if value is None:
                continue
            # a small deterministic jitter so equal categories stay visible
            x = categories.index(_category(value)) + ((i % 5) - 2) * 0.05 if categories else float(value)
            color = run.color(r)
            if r["status"] == "completed":
                ax.plot(x, r["val_acc"], "o", color=color, markersize=7, alpha=0.9)
            elif r["status"] == "stopped":
                ax.plot(x, r["val_acc"], "o", markerfacecolor="none", markeredgecolor=color, markersize=7)
            else:
                ax.plot(x, r["val_acc"], "X", color="red" if r["status"] == "diverged" else "black", markersize=7)
        if categories:
            ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 3 else 0)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        else:
            assert isinstance(dist, Range)
            if dist.log:  # pad by a few percent of the axis so edge values stay whole
                _log_axis(ax)
                pad = (dist.high / dist.low) ** 0.04
                ax.set_xlim(dist.low / pad, dist.high * pad)
            else:
                pad = (dist.high - dist.low) * 0.04
                ax.set_xlim(dist.low - pad, dist.high + pad)
        ax.set_xlabel(path + (" (log scale)" if isinstance(dist, Range) and dist.log else ""))
        ax.set_ylabel("best val accuracy")
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], color="grey", marker="o", linestyle="none", label="completed (full budget)"),
        Line2D(
            [],
            [],
            markeredgecolor="grey",
            markerfacecolor="none",
            marker="o",
            linestyle="none",
            label="stopped by ASHA (fewer epochs)",
        ),
        Line2D([], [], color="red", marker="X", linestyle="none", label="diverged"),
        Line2D([], [], color="black", marker="X", linestyle="none", label="error"),
    ] + [
        Line2D([], [], color=COLORS[i % len(COLORS)], linewidth=3, label=_pair_tag(run, i))
        for i in range(len(run.pairs))
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize=8, frameon=False)
    return _png(fig)


def _importance(run: _Run) -> tuple[dict[str, float] | None, str]:
    """Optuna's importance of each searched value (and of the pair) for the best val accuracy.

    Fed the finished search trials (completed and ASHA-stopped, each with its best val accuracy):
    with a handful of full-budget trials the stopped ones carry most of the signal. Uses fANOVA
    (a seeded random forest over every trial, deterministic) rather than Optuna 5's default
    PED-ANOVA, which judges by the top 10% of trials, i.e. by one trial in searches this small.
    Returns the importances, or None and a one-line reason.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    dists: dict[str, Any] = {}
    for path, dist in run.searched.items():
        if isinstance(dist, Range):
            dists[path] = FloatDistribution(dist.low, dist.high, log=dist.log)
        else:
            dists[path] = CategoricalDistribution(list(dict.fromkeys(_category(c) for c in dist.choices)))
    if len(run.pairs) > 1:
        dists["pair"] = CategoricalDistribution([f"{t} -> {s}" for t, s in run.pairs])

    def value(row: dict[str, Any], name: str) -> Any:
        if name == "pair":
            return f"{row['teacher']} -> {row['student']}"
        v = row.get(name)
        return None if v is None else (_category(v) if isinstance(dists[name], CategoricalDistribution) else v)

    rows = [r for r in run.search if r["status"] in FINISHED and r.get("val_acc") is not None]
    names = [n for n in dists if rows and all(value(r, n) is not None for r in rows)]  # common to every row
    varying = [n for n in names if len({repr(value(r, n)) for r in rows}) > 1]
    if len(rows) < 2 or not varying:
        return None, (
            f"Not enough to estimate importances: {len(rows)} finished search trial(s) "
            f"and {len(varying)} value(s) that vary between them (needs at least 2 trials and 1 such value)."
        )
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")
        for r in rows:
            try:
                trial = optuna.trial.create_trial(
                    params={n: value(r, n) for n in varying},
                    distributions={n: dists[n] for n in varying},
                    value=float(r["val_acc"]),
                )
            except ValueError:  # a value outside the spec's range (spec edited after the run)
                continue
            study.add_trial(trial)
        if len(study.trials) < 2:
            return None, "Not enough to estimate importances: fewer than 2 trials fit the spec's search space."
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0), params=varying)
    finally:
        optuna.logging.set_verbosity(old)
    return dict(found), f"fANOVA over {len(study.trials)} finished search trials."


def _plot_importance(importances: dict[str, float]) -> bytes:
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = _figure(7, 0.45 * len(items) + 1.3)
    ax = fig.add_subplot()
    bars = ax.barh([k for k, _ in items], [v for _, v in items], color="#1f77b4")
    ax.bar_label(bars, labels=[f"{v:.0%}" for _, v in items], padding=3, fontsize=9)
    ax.set_xlim(0, max(1.0, max(v for _, v in items) * 1.15))
    ax.set_xlabel("importance for val accuracy (fANOVA, sums to 100%)")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def _pareto(points: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """Points no other point beats on both latency (lower) and accuracy (higher), by latency."""
    front: list[tuple[float, float, Any]] = []
    for lat, acc, tag in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((lat, acc, tag))
    return front


def _plot_pareto(run: _Run) -> bytes:
    from matplotlib.lines import Line2D

    fig = _figure(8, 5.5)
    ax = fig.add_subplot()
    search = [r for r in run.search if run.full_budget(r) and r.get("latency_ms_b1") is not None]
    base = [
        r
        for r in run.trials
        if r["role"] == "baseline" and r["status"] == "completed" and r.get("latency_ms_b1") is not None
    ]
    for r in base:
        ax.plot(
            r["latency_ms_b1"],
            r["val_acc"],
            "s" if r["method"] == "none" else "^",
            markerfacecolor="none",
            markeredgecolor=run.color(r),
            markersize=8,
        )
    for r in search:
        ax.plot(r["latency_ms_b1"], r["val_acc"], "o", color=run.color(r), markersize=7, alpha=0.85)
    front = _pareto([(float(r["latency_ms_b1"]), float(r["val_acc"]), r) for r in search])
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "-", color="black", linewidth=1.2, zorder=0)
        ax.plot(
            [p[0] for p in front],
            [p[1] for p in front],
            "o",
            markerfacecolor="none",
            markeredgecolor="black",
            markersize=12,
            markeredgewidth=1.5,
        )
    lats = [float(r["latency_ms_b1"]) for r in search + base if r["latency_ms_b1"] > 0]
    if lats and max(lats) / min(lats) > 20:
        _log_axis(ax)
    devices = sorted({str(r["device"]) for r in run.trials if r.get("device")})
    ax.set_xlabel(
        "student latency, batch 1 (ms, median over its trials)" + (f" on {', '.join(devices)}" if devices else "")
    )
    ax.set_ylabel("best val accuracy")
    ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], color=COLORS[i % len(COLORS)], linewidth=3, label=_pair_tag(run, i))
        for i in range(len(run.pairs))
    ]
    handles += [
        Line2D([], [], color="grey", marker="o", linestyle="none", label="OFA trial (full budget)"),
        Line2D([], [], color="black", marker="o", markerfacecolor="none", markersize=11, label="Pareto front"),
        Line2D(
            [], [], markeredgecolor="grey", markerfacecolor="none", marker="s", linestyle="none", label="student alone"
        ),
        Line2D(
            [], [], markeredgecolor="grey", markerfacecolor="none", marker="^", linestyle="none", label="vanilla KD"
        ),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    ax.set_title("Accuracy against latency")
    return _png(fig)


# --------------------------------------------------------------------------- HTML

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.partial td { color: #777; }
.how { background: #f7f9fc; border-left: 3px solid #9ab; padding: .4em .8em; margin: .6em 0; }
.note { color: #a60; font-style: italic; }
td.gain, td.pair { white-space: nowrap; } .wide { overflow-x: auto; }
.swatch { display: inline-block; width: .9em; height: .9em; border-radius: 2px; vertical-align: -1px; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f2f2f2; padding: 0 3px; }
"""

# Lets a headless browser check that every embedded plot decoded (see tests/test_report.py).
SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.dataset.plotsExpected = String(images.length);
  document.body.dataset.plots = String(decoded.length);
});
"""


def _img(png: bytes, name: str, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}" data-plot="{name}">'


def _how(text: str) -> str:
    return f'<p class="how"><b>How to read this.</b> {text}</p>'


def _table(head: list[str], body: list[str]) -> str:
    return (
        "<table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )


def _elapsed(run: _Run) -> str:
    files = [run.folder / n for n in ("trials.parquet", "epochs.parquet", "state.json")]
    start = run.state.get("started_at") or (run.folder / "spec.yaml").stat().st_mtime
    end = run.state.get("finished_at") or max(p.stat().st_mtime for p in files if p.is_file())
    compute = sum(r["seconds"] or 0.0 for r in run.trials)
    teachers = sum(
        (t.get("info") or {}).get("train_seconds") or 0.0
        for t in run.state.get("teachers") or []
        if (t.get("info") or {}).get("trained_now")
    )
    parts = []
    if end - start >= 1:
        parts.append(f"{_fmt_duration(end - start)} wall clock")
    parts.append(f"{_fmt_duration(compute)} of trial training in total")
    if teachers:
        parts.append(f"{_fmt_duration(teachers)} training teachers")
    return "; ".join(parts)


def _header(run: _Run) -> str:
    spec = run.spec
    pair_rows = [
        f'<tr><td><span class="swatch" style="background:{COLORS[i % len(COLORS)]}"></span> P{i + 1}</td>'
        f"<td>{_esc(t)}</td><td>{_esc(s)}</td></tr>"
        for i, (t, s) in enumerate(run.pairs)
    ]
    baselines = [r for r in run.trials if r["role"] == "baseline"]
    best = best_trial(run.trials, run.max_epochs)
    best_text = (
        f"trial <code>{_esc(best['trial_id'])}</code>, val accuracy {best['val_acc']:.4f} "
        f"({_esc(_pair_tag(run, run.pair_index(best)))}); {_esc(_gain_text(_gains(run, best)))}"
        if best
        else "none yet (no search trial has run the full budget)"
    )
    search = spec.search
    meta = [
        ("dataset", f"{spec.data.dataset}" + (f", {spec.data.image_size} px" if spec.data.image_size else "")),
        ("phase", run.state.get("phase", "?")),
        ("search trials", f"{len(run.search)} of {search.num_samples}: {status_counts(run.search)}"),
        ("baselines", f"{len(baselines)}: {status_counts(baselines)}" if baselines else "none yet"),
        ("budget", f"{run.max_epochs} epochs; ASHA grace {search.grace_epochs}, reduction {search.reduction_factor}"),
        ("time", _elapsed(run)),
        ("best", best_text),
    ]
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{v if k == 'best' else _esc(v)}</td></tr>" for k, v in meta)
    return (
        f"<h1>ofasearch report: {_esc(spec.name)}</h1>"
        f"<p>Experiment folder <code>{_esc(run.folder)}</code>.</p>"
        f"<table>{rows}</table>" + _table(["pair", "teacher", "student"], pair_rows)
    )


def _gain_text(gains: dict[str, float | None]) -> str:
    parts = []
    for method, name in (("none", "alone"), ("kd", "KD")):
        g = gains[method]
        if g is not None:
            parts.append(f"{g * 100:+.1f} pts vs {name}" if not parts else f"{g * 100:+.1f} vs {name}")
    return " / ".join(parts) or "\u2013"


def _pair_cell(run: _Run, i: int) -> str:
    """A compact ``P1`` cell with the pair's colour; the full labels are in the tooltip and header."""
    teacher, student = run.pairs[i]
    swatch = f'<span class="swatch" style="background:{COLORS[i % len(COLORS)]}"></span>'
    return f'<td class="pair" title="{_esc(teacher + " -> " + student)}">{swatch} P{i + 1}</td>'


def _top_table(run: _Run, top_k: int) -> str:
    searched = list(run.searched)
    costs = [
        (c, h)
        for c, h in (
            ("params", "params"),
            ("flops", "FLOPs"),
            ("latency_ms_b1", "latency b1 (ms)"),
            ("latency_ms_b64", "latency b64 (ms)"),
        )
        if run.has(c)
    ]
    head = ["#", "trial", "pair", "status", "epochs", "val acc", "gain over baselines"]
    head += [_esc(p) for p in searched] + [h for _, h in costs]
    body = []
    for rank, r in enumerate(_ranked(run)[:top_k], 1):
        gains = _gains(run, r)
        data = "".join(f' data-vs-{m}="{g:.6f}"' for m, g in gains.items() if g is not None)
        cells = [
            f'<td class="num">{rank}</td>',
            f"<td><code>{_esc(r['trial_id'])}</code></td>",
            _pair_cell(run, run.pair_index(r)),
            f'<td title="{_esc(r.get("error") or "")}">{_esc(r["status"])}</td>',
            f'<td class="num">{r["epochs"]}</td>',
            f'<td class="num">{(r["val_acc"] or 0.0):.4f}</td>',
            f'<td class="gain"{data}>{_esc(_gain_text(gains))}</td>',
        ]
        cells += [f"<td>{_esc(_fmt_value(r.get(p)))}</td>" for p in searched]
        for c, _ in costs:
            v = r.get(c)
            text = _fmt_count(v, "") if c == "params" else _fmt_count(v, "FLOPs") if c == "flops" else _fmt_value(v)
            cells.append(f'<td class="num">{_esc(text)}</td>')
        partial = "" if run.full_budget(r) else ' class="partial"'
        body.append(f'<tr{partial} data-trial="{_esc(r["trial_id"])}">' + "".join(cells) + "</tr>")
    return _table(head, body)


def _pairs_table(run: _Run) -> str:
    teachers = run.state.get("teachers") or []
    body = []
    for i, (t, s) in enumerate(run.pairs):
        info = (teachers[i].get("info") or {}) if i < len(teachers) and teachers[i] else {}
        row = {"teacher": t, "student": s}
        accs = []
        for method in ("none", "kd"):
            base = pair_baseline(run.trials, row, method)
            accs.append(f"{base['val_acc']:.4f}" if base else "\u2013")
        ofa = [r for r in run.search if (r["teacher"], r["student"]) == (t, s) and run.full_budget(r)]
        best = max((r["val_acc"] or 0.0 for r in ofa), default=None)
        source = "trained for this search" if info.get("trained_now") else "from the cache" if info else ""
        cells = [
            f"<td>{_esc(_pair_tag(run, i))}</td>",
            f'<td class="num teacher-val">{_fmt_acc(info.get("val_acc"))}</td>',
            f'<td class="num teacher-test">{_fmt_acc(info.get("test_acc"))}</td>',
            f"<td>{_esc(source or 'not prepared yet')}</td>",
            f'<td class="num">{accs[0]}</td>',
            f'<td class="num">{accs[1]}</td>',
            f'<td class="num">{_fmt_acc(best)}</td>',
        ]
        body.append(f'<tr data-pair="{i + 1}">' + "".join(cells) + "</tr>")
    head = ["pair", "teacher val acc", "teacher test acc", "teacher", "student alone", "vanilla KD", "best OFA"]
    return _table(head, body)


def _fmt_acc(value: Any) -> str:
    return "\u2013" if value is None else f"{float(value):.4f}"


def _page(run: _Run, top_k: int, plots: dict[str, str], notes: dict[str, str]) -> str:
    def plot_or_note(name: str) -> str:
        return plots.get(name) or f'<p class="note">{_esc(notes.get(name, "not available"))}</p>'

    sections = [
        _header(run),
        "<h2>1. Learning curves</h2>",
        _how(
            "One line per trial: validation accuracy after each epoch, coloured by teacher \u2192 student pair. "
            "Solid lines are OFA search trials; dashed (student alone) and dash-dot (vanilla KD) lines are the "
            "baselines, trained at the full budget with the paper's defaults. An \u00d7 marks where ASHA stopped a "
            "trial that trailed its peers at a rung; dotted lines ending in a red \u25bc or a black X are trials that "
            "diverged (NaN loss) or failed (hover the status in the table below for the error). A search trial "
            "above both baselines of its colour is a real gain from OFA."
        ),
        plot_or_note("learning_curves"),
        "<h2>2. Validation accuracy against each searched value</h2>",
        _how(
            "One panel per searched setting, one point per search trial (its best validation accuracy). Filled "
            "points ran the full budget; hollow ones were stopped early by ASHA, so their accuracy comes from fewer "
            "epochs and sits lower for that reason alone. Look for settings where the filled points cluster high; a "
            "flat cloud means the setting matters little in this range. Log-uniform ranges use a log axis."
        ),
        plot_or_note("searched_values"),
        "<h2>3. Parameter importance</h2>",
        _how(
            "How much of the spread in validation accuracy each searched setting explains (Optuna's fANOVA "
            "evaluator over the finished search trials, completed and ASHA-stopped, with their best accuracy). "
            "With few trials these numbers are rough: use them to decide what to search next, not as a ranking."
        ),
        plot_or_note("importance"),
        f"<p>{_esc(notes.get('importance_detail', ''))}</p>" if notes.get("importance_detail") else "",
        f"<h2>4. Top {top_k} search trials</h2>",
        _how(
            "Search trials ranked by validation accuracy, full-budget completed ones first (the first row is "
            "<code>best.yaml</code>); greyed rows were stopped early. The gain compares with the same pair's "
            "baselines in percentage points of accuracy: \u201cvs alone\u201d is the student trained without a "
            "teacher, \u201cvs KD\u201d vanilla logit distillation. Export any row with "
            "<code>ofasearch export DIR --rank K</code>."
        ),
        f'<div class="wide">{_top_table(run, top_k)}</div>',
        "<h2>5. Teachers and baselines per pair</h2>",
        _how(
            "The frozen teacher's accuracy bounds what distillation can pass on: a weak teacher makes small or "
            "negative gains expected. Teachers are scored on the same held-out validation split as the students "
            "and on the test split. The last three columns are the student alone, vanilla KD and the best "
            "full-budget OFA trial."
        ),
        _pairs_table(run),
        "<h2>6. Accuracy against latency</h2>",
        _how(
            "Each full-budget OFA trial at its student's measured latency for one image (batch 1); hollow squares "
            "and triangles are the baselines. The black line joins the Pareto-optimal trials: none of them is "
            "beaten by another trial on both speed and accuracy, so pick the fastest one that is accurate enough."
        ),
        plot_or_note("pareto"),
    ]
    body = "\n".join(s for s in sections if s)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>ofasearch report: {_esc(run.spec.name)}</title>"
        f"<style>{CSS}</style><script>{SCRIPT}</script></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


# --------------------------------------------------------------------------- entry point


def write_report(folder: Path, top_k: int = 10) -> Path:
    """Write ``folder/report.html`` (self-contained) and its PNGs under ``folder/report/``.

    Raises :class:`~ofasearch.errors.SpecError` when ``folder`` is not a results folder or holds
    no trials yet. Safe while a search runs: it reads only the atomically rewritten tables.
    """
    folder = Path(folder)
    if top_k < 1:
        raise SpecError([f"top_k: {top_k} is not allowed; must be >= 1"])
    run = _load(folder)
    plots: dict[str, bytes] = {}
    notes: dict[str, str] = {}
    if run.epochs:
        plots["learning_curves"] = _plot_learning_curves(run)
    else:
        notes["learning_curves"] = "No epoch has been reported yet."
    if run.searched and any(r["status"] != "running" for r in run.search):
        plots["searched_values"] = _plot_searched_values(run)
    else:
        notes["searched_values"] = "Nothing to show: the spec searches no value, or no search trial has finished."
    importances, detail = _importance(run)
    if importances:
        plots["importance"] = _plot_importance(importances)
        notes["importance_detail"] = detail
    else:
        notes["importance"] = detail
    if run.has("latency_ms_b1") and any(run.full_budget(r) and r.get("latency_ms_b1") is not None for r in run.search):
        plots["pareto"] = _plot_pareto(run)
    else:
        notes["pareto"] = (
            "No full-budget trial with a measured latency yet."
            if run.has("latency_ms_b1")
            else "This search has no cost columns (params, FLOPs, latency) in trials.parquet; "
            "searches run with a newer ofasearch measure them."
        )
    out = folder / "report"
    out.mkdir(exist_ok=True)
    for name in PLOT_NAMES:  # no stale PNG from an earlier report of the same folder
        if name not in plots:
            (out / f"{name}.png").unlink(missing_ok=True)
    for name, png in plots.items():
        (out / f"{name}.png").write_bytes(png)
    alts = {
        "learning_curves": "validation accuracy per epoch of every trial",
        "searched_values": "validation accuracy against each searched value",
        "importance": "parameter importance",
        "pareto": "accuracy against latency with the Pareto front",
    }
    page = _page(run, top_k, {n: _img(p, n, alts[n]) for n, p in plots.items()}, notes)
    path = folder / "report.html"
    tmp = path.with_name(f".report.html.{os.getpid()}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    logger.info(f"report: {path} ({len(plots)} plots; PNGs in {out})")
    return path
