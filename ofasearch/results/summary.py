"""The plain-text table of a search's trials that ``ofasearch run`` ends with and ``status`` prints,
and the lines that say, with intervals, whether the best config beats each baseline."""

from __future__ import annotations

from typing import Any

from ofasearch.config.registry import BASELINE_METHODS, METHODS
from ofasearch.results.outcome import STOPPED, is_full_budget
from ofasearch.results.ranking import best_trial, composition_of, pair_baseline, status_counts, strongest_baseline
from ofasearch.results.seeds import mean_accuracy, paired_gain
from ofasearch.utils.formatting import short

__all__ = ["gain_lines", "summary_lines"]

ROLE_ORDER = {"baseline": 0, "search": 1, "confirm": 2}


def summary_lines(
    rows: list[dict[str, Any]], max_epochs: int, searched: list[str], val_images: int | None = None
) -> list[str]:
    """All trials (baselines, then search trials best first, then confirmation runs), the
    winner among them and the best searched composition's gains over its pair's baselines
    (:func:`gain_lines`)."""
    if not rows:
        return ["no trials yet"]
    # full-budget trials first: a score ASHA took after fewer epochs is listed, never ranked among them
    order = sorted(
        rows,
        key=lambda r: (ROLE_ORDER.get(r["role"], 3), not is_full_budget(r, max_epochs), -(r["val_acc"] or 0.0)),
    )
    head = (
        f"{'trial':>12} {'role':8} {'by':8} {'status':9} {'composition':18} {'val_acc':>7} {'ep':>3} {'sec':>6} "
        "cache  pair / values"
    )
    lines = [head, "-" * len(head)]
    for r in order:
        values = " ".join(
            f"{p.split('.')[-1]}={short(r.get(p))}" for p in searched if r["role"] == "search" and r.get(p) is not None
        )
        if r["role"] == "confirm":
            values = f"seed {r['seed']} of {r.get('confirms')}"
        lines.append(
            f"{r['trial_id']:>12} {r['role']:8} {r.get('proposed_by') or '-':8} {r['status']:9} {composition_of(r):18} "
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
    """What the search hands over: the best candidate, search config or baseline (mean over its
    seeds); then the best searched composition and, per baseline of its pair, its mean paired gain
    with the 95 % interval and whether it is more than noise. The strongest baseline (highest mean
    accuracy) is marked: beating it is the claim that counts."""
    winner = best_trial(rows, max_epochs)
    if winner is None:
        return []
    images = f", {val_images} val images" if val_images else ""
    lines = ["", f"best: {_candidate(winner)} val_acc {_score(winner, images)}: best.yaml"]
    best = best_trial(rows, max_epochs, roles=("search",))
    if best is None:
        return lines
    if best["trial_id"] != winner["trial_id"]:
        lines.append(f"best searched composition: {_candidate(best)} val_acc {_score(best, images)}")
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


def _candidate(row: dict[str, Any]) -> str:
    """``dist (baseline 1a2b3c4d)`` or ``dist + ofa@3,4 (search trial 5e6f7a8b)``."""
    role = "baseline" if row["role"] == "baseline" else "search trial"
    return f"{composition_of(row)} ({role} {row['trial_id']})"


def _score(row: dict[str, Any], images: str) -> str:
    """``0.5683 ± 0.0100 (mean ± std of 4 seeds, 2500 val images)`` or ``0.5683 (1 seed)``."""
    if row["seeds"] > 1:
        return f"{row['val_acc_mean']:.4f} ± {row['val_acc_std']:.4f} (mean ± std of {row['seeds']} seeds{images})"
    return f"{row['val_acc_mean']:.4f} (1 seed{images})"
