"""The plain-text table of a search's trials that ``ofasearch run`` ends with and ``status`` prints."""

from __future__ import annotations

from typing import Any

from ofasearch.results.ranking import best_trial, pair_baseline, status_counts
from ofasearch.utils.formatting import short

__all__ = ["summary_lines"]


def summary_lines(rows: list[dict[str, Any]], max_epochs: int, searched: list[str]) -> list[str]:
    """All trials, baselines first then best first, and the best trial's gain over its pair's baselines."""
    if not rows:
        return ["no trials yet"]
    order = sorted(rows, key=lambda r: (r["role"] != "baseline", -(r["val_acc"] or 0.0)))
    head = (
        f"{'trial':>12} {'role':8} {'status':9} {'method':6} {'val_acc':>7} {'ep':>3} {'sec':>6} cache  pair / values"
    )
    lines = [head, "-" * len(head)]
    for r in order:
        values = " ".join(f"{p.split('.')[-1]}={short(r.get(p))}" for p in searched if r["role"] == "search")
        lines.append(
            f"{r['trial_id']:>12} {r['role']:8} {r['status']:9} {r['method']:6} {r['val_acc'] or 0:7.4f} "
            f"{r['epochs']:>3} {r['seconds'] or 0:6.0f} {'yes' if r.get('teacher_cache') else 'no':5}  "
            f"{r['teacher']} -> {r['student']} {values}"
        )
    best = best_trial(rows, max_epochs)
    if best is not None:
        lines.append("")
        lines.append(f"best full-budget search trial: {best['trial_id']} val_acc {best['val_acc']:.4f}")
        for method, name in (("none", "student alone"), ("kd", "vanilla KD")):
            base = pair_baseline(rows, best, method)
            if base is not None:
                gain = best["val_acc"] - base["val_acc"]
                lines.append(f"  vs {name}: {base['val_acc']:.4f} -> gain {gain:+.4f}")
    lines.append(f"trials: {status_counts(rows)}")
    return lines
