"""The plain-text table of a search's trials that ``ofasearch run`` ends with and ``status`` prints,
and the lines that say, with intervals, whether the best config beats each baseline."""

from __future__ import annotations

from typing import Any

from ofasearch.config.registry import BASELINE_METHODS, METHODS
from ofasearch.results.outcome import STOPPED, is_full_budget
from ofasearch.results.ranking import best_trial, pair_baseline, status_counts, strongest_baseline
from ofasearch.results.seeds import mean_accuracy, paired_gain
from ofasearch.utils.formatting import short

__all__ = ["gain_lines", "summary_lines"]

ROLE_ORDER = {"baseline": 0, "search": 1, "confirm": 2}


def summary_lines(
    rows: list[dict[str, Any]], max_epochs: int, searched: list[str], val_images: int | None = None
) -> list[str]:
    """All trials (baselines, then search trials best first, then confirmation runs), and the
    best config's gains over its pair's baselines (:func:`gain_lines`)."""
    if not rows:
        return ["no trials yet"]
    # full-budget trials first: a score ASHA took after fewer epochs is listed, never ranked among them
    order = sorted(
        rows,
        key=lambda r: (ROLE_ORDER.get(r["role"], 3), not is_full_budget(r, max_epochs), -(r["val_acc"] or 0.0)),
    )
    head = (
        f"{'trial':>12} {'role':8} {'by':8} {'status':9} {'method':6} {'val_acc':>7} {'ep':>3} {'sec':>6} "
        "cache  pair / values"
    )
    lines = [head, "-" * len(head)]
    for r in order:
        values = " ".join(f"{p.split('.')[-1]}={short(r.get(p))}" for p in searched if r["role"] == "search")
        if r["role"] == "confirm":
            values = f"seed {r['seed']} of {r.get('confirms')}"
        lines.append(
            f"{r['trial_id']:>12} {r['role']:8} {r.get('proposed_by') or '-':8} {r['status']:9} {r['method']:6} "
            f"{r['val_acc'] or 0:7.4f} {r['epochs']:>3} {r['seconds'] or 0:6.0f} "
            f"{'yes' if r.get('teacher_cache') else 'no':5}  {r['teacher']} -> {r['student']} {values}"
        )
    early = sum(1 for r in rows if r["status"] == STOPPED)
    if early:
        lines.append(
            f"({early} trial(s) stopped early by ASHA: their val_acc is after 'ep' of {max_epochs} epochs, listed "
            "after the full-budget ones and never compared with a baseline)"
        )
    lines += gain_lines(rows, max_epochs, val_images)
    lines.append(f"trials: {status_counts(rows)}")
    return lines


def gain_lines(rows: list[dict[str, Any]], max_epochs: int, val_images: int | None = None) -> list[str]:
    """The best config (mean over its seeds) and, per baseline of its pair, the mean paired gain
    with its 95 % interval and whether it is more than noise; the strongest baseline (highest mean
    accuracy) is marked: beating it is the claim that counts."""
    best = best_trial(rows, max_epochs)
    if best is None:
        return []
    seeds = best["seeds"]
    spread = f"mean of {seeds} seeds, std {best['val_acc_std']:.4f}" if seeds > 1 else "1 seed"
    images = f", {val_images} val images" if val_images else ""
    head = f"best full-budget search trial: {best['trial_id']} val_acc {best['val_acc_mean']:.4f} ({spread}{images})"
    lines = ["", head]
    strongest = strongest_baseline(rows, best)
    for method in BASELINE_METHODS:
        base = pair_baseline(rows, best, method)
        if base is None:
            continue
        name = METHODS[method].label
        mark = " (strongest baseline)" if strongest is not None and base["trial_id"] == strongest["trial_id"] else ""
        gain = paired_gain(rows, best, base, val_images, max_epochs=max_epochs)
        if gain is not None:
            lines.append(
                f"  vs {name}{mark}: {mean_accuracy(rows, base):.4f} -> gain {gain.text()}: {gain.verdict(name)}"
            )
    return lines
