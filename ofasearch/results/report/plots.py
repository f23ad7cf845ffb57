"""The report's plots as PNG bytes, one function per plot.

Figures are attached to an Agg canvas directly, without pyplot: no global backend switch or
figure registry is touched (the report may run inside a user's notebook or a Ray driver).
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

from ofasearch.config import Choices, Range
from ofasearch.config.registry import METHODS
from ofasearch.results.outcome import BROKEN, COMPLETED, DIVERGED, ERROR, RUNNING, STOPPED
from ofasearch.results.report.data import Candidate, ReportData, category, family, pair_color, pareto_front

# how each baseline method is drawn: its learning curve's line style, its accuracy-latency marker
BASELINE_LINES: dict[str, str | tuple] = {"none": "--", "kd": "-.", "dkd": (0, (5, 1, 1, 1, 1, 1)), "dist": (0, (8, 2))}
BASELINE_MARKERS = {"none": "s", "kd": "^", "dkd": "v", "dist": "D"}

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

__all__ = [
    "decision",
    "decision_figure",
    "importance",
    "learning_curves",
    "learning_curves_figure",
    "pareto",
    "searched_values",
]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _curves(data: ReportData) -> dict[str, list[tuple[int, float]]]:
    curves: dict[str, list[tuple[int, float]]] = {}
    for e in data.epochs:
        if e.get("val_acc") is not None:
            curves.setdefault(e["trial_id"], []).append((int(e["epoch"]), float(e["val_acc"])))
    return {k: sorted(v) for k, v in curves.items()}


def _curve(ax: Axes, data: ReportData, row: dict[str, Any], points: list[tuple[int, float]]) -> None:
    """One trial's curve in its method's or composition's colour, with how it ended."""
    xs, ys = zip(*points, strict=True)
    baseline = row["role"] == "baseline"
    color = data.family_color(row)
    ax.plot(
        xs,
        ys,
        color=color,
        linestyle=BASELINE_LINES.get(row["method"], "--") if baseline else ":" if row["status"] in BROKEN else "-",
        linewidth=1.8 if baseline else 1.2,
        alpha=0.95 if baseline else 0.75,
        marker=".",
        markersize=4,
        gid=row["trial_id"],
    )
    marker = {STOPPED: ("x", color, 9), DIVERGED: ("v", "red", 9), ERROR: ("X", "black", 9)}
    if row["status"] in marker:
        m, c, size = marker[row["status"]]
        ax.plot(xs[-1], ys[-1], marker=m, color=c, markersize=size, markeredgewidth=2, linestyle="none")


def _family_handles(data: ReportData, rows: list[dict[str, Any]]) -> list[Line2D]:
    """A legend entry per baseline method and searched composition that has a curve."""
    from matplotlib.lines import Line2D

    shown = {family(r) for r in rows}
    handles = [
        Line2D(
            [], [], color=data.family_colors[k], linestyle=style, linewidth=1.8, label=f"baseline: {METHODS[m].label}"
        )
        for m, style in BASELINE_LINES.items()
        if (k := ("baseline", m)) in shown
    ]
    handles += [
        Line2D([], [], color=color, linestyle="-", linewidth=2, label=f"searched: {name}")
        for (kind, name), color in data.family_colors.items()
        if kind == "search" and (kind, name) in shown
    ]
    return handles


def learning_curves(data: ReportData) -> bytes:
    """:func:`learning_curves_figure` as PNG bytes."""
    return _png(learning_curves_figure(data))


def learning_curves_figure(data: ReportData) -> Figure:
    """Validation accuracy per epoch of every trial (its line's gid is its trial id), one panel
    per pair, coloured by baseline method or searched composition, with where ASHA stopped a
    trial, where one diverged or failed, and the winner's peak."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    curves = _curves(data)
    drawn = [r for r in data.trials if curves.get(r["trial_id"]) and r["role"] != "confirm"]  # reruns: in the tables
    cols = min(2, len(data.pairs))
    rows = math.ceil(len(data.pairs) / cols)
    fig = _figure(9 if cols == 1 else 12, 4.2 * rows + 1.8)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(len(data.pairs))]
    for row in drawn:
        _curve(axes[data.pair_index(row)], data, row, curves[row["trial_id"]])
    winner = data.winner
    if winner is not None and curves.get(winner["trial_id"]):
        ep, acc = max(curves[winner["trial_id"]], key=lambda p: p[1])
        axes[data.pair_index(winner)].plot(
            ep, acc, marker="*", color="gold", markeredgecolor="black", markersize=15, linestyle="none"
        )
    for i, ax in enumerate(axes):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy")
        ax.set_xlim(0.8, data.max_epochs + 0.2)
        ax.grid(alpha=0.3)
        ax.set_title(data.tags[i], fontsize=10)
    handles = _family_handles(data, drawn) + [
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
            label="winner (best.yaml), its best epoch",
        ),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("Validation accuracy per epoch")
    return fig


def _draw_candidate(ax: Axes, y: int, c: Candidate, color: str) -> None:
    """One candidate's row: its interval over seeds, a dot per seed, its mean (the winner's a gold star)."""
    if c.winner:
        ax.axhspan(y - 0.45, y + 0.45, color="gold", alpha=0.25, linewidth=0)
    if c.half_width is not None:
        ax.errorbar(c.mean, y, xerr=c.half_width, color=color, capsize=4, linewidth=1.6)
    step = min(0.12, 0.6 / c.seeds)  # spread over the row so equal accuracies stay visible
    jitter = [y + (i - (c.seeds - 1) / 2) * step for i in range(c.seeds)]
    ax.plot(c.accuracies, jitter, "o", color=color, alpha=0.55, markersize=5, linestyle="none", gid="seed")
    marker, face, size = ("*", "gold", 18) if c.winner else ("D", color, 8)
    ax.plot(c.mean, y, marker, color=face, markeredgecolor="black", markersize=size, gid="mean", zorder=3)
    spread = f" \u00b1 {c.half_width:.4f}" if c.half_width is not None else ""
    at_right = ax.get_yaxis_transform()  # x in axes fractions, y in data: a column right of the plot
    ax.text(1.01, y, f"{c.mean:.4f}{spread}", transform=at_right, va="center", fontsize=8)


def _decision_handles(candidates: list[Candidate]) -> list[Line2D]:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="grey", marker="o", alpha=0.55, linestyle="none", label="one seed's run"),
        Line2D([], [], color="grey", marker="D", markeredgecolor="black", linestyle="none", label="mean over seeds"),
    ]
    if any(c.half_width is not None for c in candidates):  # single runs have none
        handles.append(
            Line2D([], [], color="grey", marker="|", markersize=12, linewidth=1.6, label="95% t-interval of the mean")
        )
    star = dict(color="gold", marker="*", markeredgecolor="black", markersize=14, linestyle="none")
    return [*handles, Line2D([], [], label="winner: handed over as best.yaml", **star)]


def decision_figure(data: ReportData, candidates: list[Candidate]) -> Figure:
    """Every candidate on one accuracy axis, best at the top: a dot per seed, its mean, the 95 %
    t-interval of that mean over seeds; the winner (best.yaml) on a gold band."""
    fig = _figure(9, 0.42 * len(candidates) + 2.2)
    ax = fig.add_subplot()
    for y, c in enumerate(candidates):
        _draw_candidate(ax, y, c, data.family_color(c.row))
    ax.set_yticks(range(len(candidates)), [_candidate_tick(rank, c) for rank, c in enumerate(candidates, 1)])
    for tick, c in zip(ax.get_yticklabels(), candidates, strict=True):
        tick.set_color(data.family_color(c.row))
        tick.set_fontweight("bold" if c.winner else "normal")
    ax.set_ylim(len(candidates) - 0.5, -0.5)  # the best at the top
    ax.set_xlabel("validation accuracy")
    ax.grid(alpha=0.3, axis="x")
    fig.legend(handles=_decision_handles(candidates), loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    ax.set_title("The decision: every candidate, searched configs and baselines alike")
    return fig


def _candidate_tick(rank: int, c: Candidate) -> str:
    """``1. ★ winner: dist (baseline)  (n=3)``: the rank is the one ``ofasearch export --rank`` takes."""
    prefix = "\u2605 winner: " if c.winner else ""
    return f"{rank}. {prefix}{c.label}  (n={c.seeds})"


def decision(data: ReportData, candidates: list[Candidate]) -> bytes:
    """:func:`decision_figure` as PNG bytes."""
    return _png(decision_figure(data, candidates))


def _log_axis(ax: Axes) -> None:
    """A log x-axis labelled 1, 2, 5 per decade in plain numbers (ranges often span < 1 decade)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def searched_values(data: ReportData) -> bytes:
    """One panel per searched value: each finished search trial's best accuracy at its value
    (filled: full budget, hollow: stopped early, so lower for that reason alone)."""
    from matplotlib.lines import Line2D

    searched = list(data.searched.items())
    cols = min(3, len(searched))
    rows = math.ceil(len(searched) / cols)
    fig = _figure(4.3 * cols, 3.3 * rows + 0.5)
    trials = [r for r in data.search if r["status"] != RUNNING and r.get("val_acc") is not None]
    for n, (path, dist) in enumerate(searched):
        ax = fig.add_subplot(rows, cols, n + 1)
        categories: list[str] = []
        if isinstance(dist, Choices):
            categories = [category(c) for c in dist.choices]
            categories += sorted({category(r[path]) for r in trials if r.get(path) is not None} - set(categories))
        for i, r in enumerate(trials):
            value = r.get(path)
            if value is None:
                continue
            # a small deterministic jitter so equal categories stay visible
            x = categories.index(category(value)) + ((i % 5) - 2) * 0.05 if categories else float(value)
            color = data.color(r)
            if r["status"] == COMPLETED:
                ax.plot(x, r["val_acc"], "o", color=color, markersize=7, alpha=0.9)
            elif r["status"] == STOPPED:
                ax.plot(x, r["val_acc"], "o", markerfacecolor="none", markeredgecolor=color, markersize=7)
            else:
                ax.plot(x, r["val_acc"], "X", color="red" if r["status"] == DIVERGED else "black", markersize=7)
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
    ] + [Line2D([], [], color=pair_color(i), linewidth=3, label=data.tags[i]) for i in range(len(data.pairs))]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize=8, frameon=False)
    return _png(fig)


def importance(importances: dict[str, float]) -> bytes:
    """One bar per searched value: its share of the accuracy's spread (the shares sum to 1)."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = _figure(7, 0.45 * len(items) + 1.3)
    ax = fig.add_subplot()
    bars = ax.barh([k for k, _ in items], [v for _, v in items], color="#1f77b4")
    ax.bar_label(bars, labels=[f"{v:.0%}" for _, v in items], padding=3, fontsize=9)
    ax.set_xlim(0, max(1.0, max(v for _, v in items) * 1.15))
    ax.set_xlabel("importance for val accuracy (fANOVA, sums to 100%)")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def pareto(data: ReportData) -> bytes:
    """Full-budget searched configs and baselines at their student's batch-1 latency, the Pareto front joined."""
    from matplotlib.lines import Line2D

    fig = _figure(8, 5.5)
    ax = fig.add_subplot()
    search = [r for r in data.search if data.full_budget(r) and r.get("latency_ms_b1") is not None]
    base = [
        r
        for r in data.trials
        if r["role"] == "baseline" and r["status"] == COMPLETED and r.get("latency_ms_b1") is not None
    ]
    for r in base:
        ax.plot(
            r["latency_ms_b1"],
            r["val_acc"],
            BASELINE_MARKERS.get(r["method"], "^"),
            markerfacecolor="none",
            markeredgecolor=data.color(r),
            markersize=8,
        )
    for r in search:
        ax.plot(r["latency_ms_b1"], r["val_acc"], "o", color=data.color(r), markersize=7, alpha=0.85)
    front = pareto_front([(float(r["latency_ms_b1"]), float(r["val_acc"]), r) for r in search])
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
    devices = sorted({str(r["device"]) for r in data.trials if r.get("device")})
    ax.set_xlabel(
        "student latency, batch 1 (ms, median over its trials)" + (f" on {', '.join(devices)}" if devices else "")
    )
    ax.set_ylabel("best val accuracy")
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=pair_color(i), linewidth=3, label=data.tags[i]) for i in range(len(data.pairs))]
    handles += [
        Line2D([], [], color="grey", marker="o", linestyle="none", label="searched config (full budget)"),
        Line2D([], [], color="black", marker="o", markerfacecolor="none", markersize=11, label="Pareto front"),
        *(
            Line2D(
                [],
                [],
                markeredgecolor="grey",
                markerfacecolor="none",
                marker=mk,
                linestyle="none",
                label=METHODS[m].label,
            )
            for m, mk in BASELINE_MARKERS.items()
        ),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    ax.set_title("Accuracy against latency")
    return _png(fig)
