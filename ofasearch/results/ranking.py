"""Which search trial is best, and how it compares: the ranking ``best.yaml``, ``export`` and the
report share, each pair's baselines, and latency compared per student."""

from __future__ import annotations

import statistics
from typing import Any

from ofasearch.results.outcome import COMPLETED, is_full_budget
from ofasearch.results.seeds import seed_runs

__all__ = [
    "CANDIDATE_ROLES",
    "best_trial",
    "composition_of",
    "pair_baseline",
    "ranked_trials",
    "status_counts",
    "strongest_baseline",
    "student_latency",
]


def student_latency(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose latencies are their student's median over every trial of it on the same device.
    Latency is a property of the architecture; one trial's measurement on a shared machine is
    noisy (the same student varied 2x here), so comparisons and limits use the median."""
    groups: dict[tuple[Any, Any], dict[str, list[float]]] = {}
    for r in rows:
        for key in ("latency_ms_b1", "latency_ms_b64"):
            if r.get(key) is not None:
                groups.setdefault((r["student"], r.get("device")), {}).setdefault(key, []).append(r[key])
    out = []
    for r in rows:
        medians = groups.get((r["student"], r.get("device")), {})
        out.append({**r, **{k: statistics.median(v) for k, v in medians.items()}})
    return out


# What a search hands over is chosen among both: a baseline that beats every searched config is the winner
CANDIDATE_ROLES = ("search", "baseline")


def composition_of(row: dict[str, Any]) -> str:
    """What trained the row's student (``dist``, ``ofa + ofa@1,2,3,4``; see
    ``DistillSpec.composition``); rows of earlier versions have only their method."""
    return str(row.get("composition") or row["method"])


def ranked_trials(
    rows: list[dict[str, Any]], max_epochs: int, roles: tuple[str, ...] = CANDIDATE_ROLES
) -> list[dict[str, Any]]:
    """Trials of ``roles`` (search trials and baselines: the candidates a search hands over) that
    ran the full budget, best first (never diverged/stopped/failed ones).

    Each row gains ``val_acc_mean``, ``val_acc_std`` and ``seeds`` (its runs over seeds, see
    :mod:`ofasearch.results.seeds`). Configs the confirmation phase trained on several seeds come
    first, by their mean (one lucky run cannot outrank them); then the others by their single
    run. Ties go to the faster trial."""
    full = [r for r in rows if r["role"] in roles and is_full_budget(r, max_epochs)]
    ranked = []
    for r in full:
        runs = seed_runs(rows, r)
        spread = {"val_acc_mean": runs.mean_or(r["val_acc"]), "val_acc_std": runs.std, "seeds": max(runs.n, 1)}
        ranked.append({**r, **spread})
    return sorted(ranked, key=lambda r: (r["seeds"] < 2, -r["val_acc_mean"], r["seconds"] or 0.0))


def best_trial(
    rows: list[dict[str, Any]], max_epochs: int, roles: tuple[str, ...] = CANDIDATE_ROLES
) -> dict[str, Any] | None:
    """The best full-budget candidate, search trial or baseline (rank 1 of :func:`ranked_trials`)."""
    ranked = ranked_trials(rows, max_epochs, roles)
    return ranked[0] if ranked else None


def pair_baseline(rows: list[dict[str, Any]], row: dict[str, Any], method: str) -> dict[str, Any] | None:
    """``row``'s pair's completed baseline of ``method`` ("none": student alone, "kd", ...), or None."""
    pair = (row["teacher"], row["student"])
    for r in rows:
        if r["role"] == "baseline" and r["method"] == method and r["status"] == COMPLETED:
            if (r["teacher"], r["student"]) == pair:
                return r
    return None


def strongest_baseline(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """``row``'s pair's completed baseline with the highest mean accuracy over its seeds (the one
    a gain must beat to mean anything: a gain over vanilla KD alone is the weakest claim), or None."""
    pair = (row["teacher"], row["student"])
    found = [
        r for r in rows if r["role"] == "baseline" and r["status"] == COMPLETED and (r["teacher"], r["student"]) == pair
    ]
    return max(found, key=lambda r: seed_runs(rows, r).mean_or(r["val_acc"]), default=None)


def status_counts(rows: list[dict[str, Any]]) -> str:
    """``"2 completed, 6 stopped"`` (``"none"`` for no rows)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
