"""The report page: the skeleton, styles and reading guides live in ``page.html`` (a
:class:`string.Template`); this module renders the parts that depend on the search (header,
tables, plots or the note that says why one is missing), every value HTML-escaped."""

from __future__ import annotations

import base64
import html
from importlib import resources
from string import Template
from typing import Any

from ofasearch.config.registry import BASELINE_METHODS, METHODS
from ofasearch.results.outcome import STOPPED
from ofasearch.results.ranking import composition_of, status_counts, strongest_baseline
from ofasearch.results.report.data import (
    Candidate,
    ReportData,
    elapsed,
    gains,
    pair_color,
    pair_summaries,
    ranked,
    single_run_noise,
)
from ofasearch.results.seeds import Gain
from ofasearch.utils.formatting import format_duration

__all__ = ["PLOT_ALTS", "render_page"]

DASH = "\u2013"  # an empty cell
WINNER_MARK = ' <b class="winner">\u2605 best.yaml</b>'  # the top table's row of the winner, when searched
PLOT_ALTS = {
    "decision": "every candidate's accuracy per seed, its mean and 95% interval over seeds, the winner marked",
    "learning_curves": "validation accuracy per epoch of every trial",
    "searched_values": "validation accuracy against each searched value",
    "importance": "parameter importance",
    "pareto": "accuracy against latency with the Pareto front",
}
COST_HEADS = (
    ("params", "params"),
    ("flops", "FLOPs"),
    ("latency_ms_b1", "latency b1 (ms)"),
    ("latency_ms_b64", "latency b64 (ms)"),
)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt_value(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _fmt_count(value: Any, unit: str) -> str:
    if value is None:
        return DASH
    value = float(value)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= div:
            return f"{value / div:.3g} {suffix}{unit}"
    return f"{value:.3g} {unit}"


def _fmt_acc(value: Any) -> str:
    return DASH if value is None else f"{float(value):.4f}"


def _mean_text(row: dict[str, Any]) -> str:
    """``0.6200 ± 0.0200 (3 seeds)``, or the single run's accuracy."""
    mean, seeds = row.get("val_acc_mean", row["val_acc"] or 0.0), row.get("seeds", 1)
    return f"{mean:.4f} ± {row['val_acc_std']:.4f} ({seeds} seeds)" if seeds > 1 else f"{mean:.4f}"


SHORT_NAMES = {"none": "alone", "kd": "KD", "dkd": "DKD", "dist": "DIST"}


def _gain_text(gain: dict[str, Gain | None], strongest: str | None = None) -> str:
    """``+4.4 pts vs alone [+2.1, +6.7] / +1.4 vs KD (strongest) [-1.0, +3.8] (within noise)``
    (95 % intervals); ``strongest`` marks the pair's strongest baseline."""
    parts = []
    for method in BASELINE_METHODS:
        g = gain.get(method)
        if g is None:
            continue
        name = SHORT_NAMES.get(method, method) + (" (strongest)" if method == strongest else "")
        text = f"{g.mean * 100:+.1f} pts vs {name}" if not parts else f"{g.mean * 100:+.1f} vs {name}"
        if g.kind != "none":
            text += f" [{g.low * 100:+.1f}, {g.high * 100:+.1f}]" + (" (within noise)" if g.within_noise else "")
        parts.append(text)
    return " / ".join(parts) or DASH


def _not_compared(data: ReportData, row: dict[str, Any]) -> str:
    """The gain cell of a trial that did not run the full budget: why there is no gain."""
    if row["status"] == STOPPED:
        stopped = f"stopped after {row['epochs']} of {data.max_epochs} epochs"
        return f"{DASH} ({stopped}: not compared with full-budget baselines)"
    return DASH


def _img(png: bytes, name: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{_esc(PLOT_ALTS[name])}" data-plot="{name}">'


def _table(head: list[str], body: list[str]) -> str:
    cells = "".join(f"<th>{h}</th>" for h in head)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _swatch(i: int) -> str:
    return f'<span class="swatch" style="background:{pair_color(i)}"></span>'


def _time_text(data: ReportData) -> str:
    wall, compute, teachers = elapsed(data)
    parts = []
    if wall >= 1:
        parts.append(f"{format_duration(wall)} wall clock")
    parts.append(f"{format_duration(compute)} of trial training in total")
    if teachers:
        parts.append(f"{format_duration(teachers)} training teachers")
    return "; ".join(parts)


def _what(row: dict[str, Any]) -> str:
    """``the DIST baseline (dist)`` or ``searched config ofa + ofa@3,4``, HTML."""
    if row["role"] == "baseline":
        label = METHODS[row["method"]].label if row["method"] in METHODS else row["method"]
        return f"the <b>{_esc(label)} baseline</b> (<code>{_esc(composition_of(row))}</code>)"
    return f"searched config <code>{_esc(composition_of(row))}</code>"


def _trial_html(data: ReportData, row: dict[str, Any]) -> str:
    """What trained the row, its trial, its accuracy and pair, and its gains over the pair's baselines."""
    return (
        f"{_what(row)}: trial <code>{_esc(row['trial_id'])}</code>, val accuracy {_mean_text(row)} "
        f"({_esc(data.tags[data.pair_index(row)])}); {_esc(_gain_text(gains(data, row)))}"
    )


def _winner_rows(data: ReportData) -> str:
    """The header's winner (best.yaml), and when a baseline won, the best searched config beside it."""
    winner = data.winner
    if winner is None:
        text = "none yet (no searched config or baseline has run the full budget)"
        return f"<tr><th>winner (best.yaml)</th><td>{text}</td></tr>"
    html_rows = f'<tr data-winner="{_esc(winner["trial_id"])}"><th>winner (best.yaml)</th><td>'
    if winner["role"] == "search":
        return html_rows + f"{_trial_html(data, winner)}</td></tr>"
    html_rows += (
        f"a baseline won: no searched config beat it, so best.yaml trains {_trial_html(data, winner)}</td></tr>"
    )
    searched = next((r for r in ranked(data) if data.full_budget(r)), None)
    best = _trial_html(data, searched) if searched else "none has run the full budget"
    return html_rows + f"<tr><th>best searched config</th><td>{best}</td></tr>"


def _header(data: ReportData) -> str:
    spec = data.spec
    pair_rows = [
        f"<tr><td>{_swatch(i)} P{i + 1}</td><td>{_esc(t)}</td><td>{_esc(s)}</td></tr>"
        for i, (t, s) in enumerate(data.pairs)
    ]
    baselines = [r for r in data.trials if r["role"] == "baseline"]
    search = spec.search
    meta = [
        ("dataset", spec.dataset + (f", {spec.image_size} px" if spec.image_size else "")),
        ("phase", data.state.get("phase", "?")),
        ("search trials", f"{len(data.search)} of {search.num_samples}: {status_counts(data.search)}"),
        ("baselines", f"{len(baselines)}: {status_counts(baselines)}" if baselines else "none yet"),
        ("budget", f"{data.max_epochs} epochs; ASHA grace {search.grace_epochs}, reduction {search.reduction_factor}"),
        ("time", _time_text(data)),
    ]
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in meta)
    rows += _winner_rows(data)
    return (
        f"<h1>ofasearch report: {_esc(spec.name)}</h1>"
        f"<p>Experiment folder <code>{_esc(data.folder)}</code>.</p>"
        f"<table>{rows}</table>" + _table(["pair", "teacher", "student"], pair_rows)
    )


def _pair_cell(data: ReportData, i: int) -> str:
    """A compact ``P1`` cell with the pair's colour; the full labels are in the tooltip and header."""
    teacher, student = data.pairs[i]
    return f'<td class="pair" title="{_esc(teacher + " -> " + student)}">{_swatch(i)} P{i + 1}</td>'


def _cost_text(column: str, value: Any) -> str:
    if column == "params":
        return _fmt_count(value, "")
    if column == "flops":
        return _fmt_count(value, "FLOPs")
    return _fmt_value(value)


def _top_table(data: ReportData, top_k: int) -> str:
    searched = list(data.searched)
    costs = [(c, h) for c, h in COST_HEADS if data.has(c)]
    head = ["#", "trial", "composition", "proposed by", "pair", "status", "epochs", "val acc"]
    head += ["gain over baselines (95% CI)"]
    head += [_esc(p) for p in searched] + [h for _, h in costs]
    body = []
    for rank, r in enumerate(ranked(data)[:top_k], 1):
        gain = gains(data, r)
        strongest = strongest_baseline(data.trials, r)
        attrs = "".join(f' data-vs-{m}="{g.mean:.6f}"' for m, g in gain.items() if g is not None)
        attrs += f' data-strongest="{_esc(strongest["method"])}"' if strongest else ""
        strongest_method = strongest["method"] if strongest else None
        gain_text = _gain_text(gain, strongest_method) if data.full_budget(r) else _not_compared(data, r)
        cells = [
            f'<td class="num">{rank}</td>',
            f"<td><code>{_esc(r['trial_id'])}</code>{WINNER_MARK if data.is_winner(r) else ''}</td>",
            f"<td>{_esc(composition_of(r))}</td>",
            f"<td>{_esc(r.get('proposed_by') or DASH)}</td>",
            _pair_cell(data, data.pair_index(r)),
            f'<td title="{_esc(r.get("error") or "")}">{_esc(r["status"])}</td>',
            f'<td class="num">{r["epochs"]}</td>',
            f'<td class="num">{_mean_text(r)}</td>',
            f'<td class="gain"{attrs}>{_esc(gain_text)}</td>',
        ]
        cells += [f"<td>{_esc(_fmt_value(r.get(p)))}</td>" for p in searched]
        cells += [f'<td class="num">{_esc(_cost_text(c, r.get(c)))}</td>' for c, _ in costs]
        partial = "" if data.full_budget(r) else ' class="partial"'
        body.append(f'<tr{partial} data-trial="{_esc(r["trial_id"])}">' + "".join(cells) + "</tr>")
    return _table(head, body)


def _pairs_table(data: ReportData) -> str:
    body = []
    for i, p in enumerate(pair_summaries(data)):
        cells = [
            f"<td>{_esc(p.tag)}</td>",
            f'<td class="num teacher-val">{_fmt_acc(p.teacher_val_acc)}</td>',
            f'<td class="num teacher-test">{_fmt_acc(p.teacher_test_acc)}</td>',
            f"<td>{_esc(p.teacher_source or 'not prepared yet')}</td>",
            f'<td class="num">{_fmt_acc(p.alone_val_acc)}</td>',
            f'<td class="num">{_fmt_acc(p.kd_val_acc)}</td>',
            f'<td class="num">{_fmt_acc(p.dkd_val_acc)}</td>',
            f'<td class="num">{_fmt_acc(p.dist_val_acc)}</td>',
            f"<td>{_esc(SHORT_NAMES.get(p.strongest or '', DASH))}</td>",
            f'<td class="num best-search">{_fmt_acc(p.best_search_val_acc)}</td>',
        ]
        body.append(f'<tr data-pair="{i + 1}">' + "".join(cells) + "</tr>")
    head = ["pair", "teacher val acc", "teacher test acc", "teacher", "student alone", "vanilla KD", "DKD", "DIST"]
    head += ["strongest baseline", "best searched config"]
    return _table(head, body)


def _seeds_text(counts: list[int]) -> str:
    low, high = min(counts), max(counts)
    return f"{low} seeds" if low == high else f"{low} to {high} seeds"


def _candidate_score(c: Candidate) -> str:
    """``mean 0.7500 ± 0.0248 over 3 seeds`` or ``0.8472 on its one run``."""
    if c.half_width is None:
        return f"{c.mean:.4f} on its one run"
    return f"mean {c.mean:.4f} \u00b1 {c.half_width:.4f} over {c.seeds} seeds"


def _decision_caption(data: ReportData, candidates: list[Candidate], total: int) -> str:
    """The noise behind the decision: seeds, validation images, what the interval is over; and the winner."""
    if not candidates:
        return ""
    val_images = data.state.get("val_images")
    images = f"{val_images} validation images" if val_images else "a validation set of unknown size"
    confirmed = candidates[0].seeds >= 2
    if confirmed:
        noise = (
            f"{len(candidates)} candidates confirmed on {_seeds_text([c.seeds for c in candidates])} each, "
            f"every dot one seed's best accuracy on {images}. The bar is the 95% t-interval of the mean "
            "over those seeds (t quantile with n\u22121 degrees of freedom times std/\u221an): it measures "
            "the seed-to-seed spread, not the validation set's own sampling noise."
        )
    else:
        shown = f"the best {len(candidates)} of {total}" if total > len(candidates) else f"all {total}"
        noise = (
            f"No candidate was trained on several seeds, so there is no interval over seeds: {shown} "
            f"full-budget candidates with their single run, on {images}."
        )
    winner = next((c for c in candidates if c.winner), None)
    if winner is not None:
        floor = single_run_noise(winner.mean, val_images)
        if floor is not None:
            noise += (
                f" One run's accuracy on these images alone is uncertain by about \u00b1{floor:.4f} (binomial 95%)."
            )
        noise += f" Winner, handed over as best.yaml: {winner.label}, " + _candidate_score(winner) + "."
        if winner.baseline:
            noise += " A baseline won: no searched config beat it."
    return f'<p class="caption" data-candidates="{len(candidates)}">{_esc(noise)}</p>'


def _template() -> Template:
    return Template(resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8"))


def render_page(
    data: ReportData,
    top_k: int,
    plots: dict[str, bytes],
    notes: dict[str, str],
    candidates: tuple[list[Candidate], int] = ([], 0),
) -> str:
    """The whole page: ``plots`` (PNG bytes by name) embedded as data URIs; ``notes`` say why a
    plot is missing (and ``importance_detail`` how importances were estimated); ``candidates``
    (those of the decision figure, and how many there are) give its caption."""

    def plot_or_note(name: str) -> str:
        if name in plots:
            return _img(plots[name], name)
        return f'<p class="note">{_esc(notes.get(name, "not available"))}</p>'

    detail = notes.get("importance_detail")
    return _template().substitute(
        name=_esc(data.spec.name),
        header=_header(data),
        decision=plot_or_note("decision"),
        decision_caption=_decision_caption(data, *candidates),
        learning_curves=plot_or_note("learning_curves"),
        searched_values=plot_or_note("searched_values"),
        importance=plot_or_note("importance"),
        importance_detail=f"<p>{_esc(detail)}</p>" if detail else "",
        top_k=top_k,
        top_table=_top_table(data, top_k),
        pairs_table=_pairs_table(data),
        pareto=plot_or_note("pareto"),
    )
