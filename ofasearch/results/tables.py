"""Search results: Parquet tables rewritten atomically as trials report, best config, summary.

``trials.parquet`` has one row per trial (search and baseline), ``epochs.parquet`` one per
trial-epoch. Both are rewritten (write to a temporary file, then rename) on every change, so a
reader, ``ofasearch status`` or a crash never sees a half-written file.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ofasearch.config import Spec, load_spec
from ofasearch.errors import SpecError

__all__ = [
    "SPEC_FILE",
    "COST_COLUMNS",
    "EPOCH_COLUMNS",
    "TRIAL_COLUMNS",
    "best_trial",
    "load_folder_spec",
    "pair_baseline",
    "ranked_trials",
    "read_rows",
    "status_counts",
    "student_latency",
    "write_table",
    "summary_lines",
    "write_best",
]

COST_COLUMNS = ("params", "flops", "latency_ms_b1", "latency_ms_b64", "device")  # ModelCost.as_metrics()
TRIAL_COLUMNS = ["trial_id", "role", "status", "teacher", "student", "method", "val_acc", "val_acc_last",
                 "epochs", "seconds", "error", "seed", "backend", "teacher_cache", *COST_COLUMNS,
                 "config"]  # fmt: skip
SPEC_FILE = "spec.yaml"  # the spec a results folder was run with
EPOCH_COLUMNS = ["trial_id", "role", "epoch", "train_loss", "val_acc", "lr", "seconds"]


def write_table(rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    names = list(columns) + sorted({k for r in rows for k in r} - set(columns))
    table = (
        pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows])
        if rows
        else pa.table({k: pa.array([], pa.string()) for k in names})
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A table's rows ([] when it does not exist yet); a damaged file is a one-line SpecError."""
    try:
        return pq.read_table(path).to_pylist() if path.is_file() else []
    except (OSError, pa.ArrowException) as exc:
        raise SpecError([f"{path}: unreadable Parquet table ({str(exc).splitlines()[0]})"]) from None


def load_folder_spec(folder: Path) -> Spec:
    """The spec a results folder was run with (its ``spec.yaml``, paths already absolute)."""
    if not (folder / SPEC_FILE).is_file():
        raise SpecError([f"{folder}: not an ofasearch results folder (no {SPEC_FILE})"])
    return load_spec(folder / SPEC_FILE)


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


def ranked_trials(rows: list[dict[str, Any]], max_epochs: int) -> list[dict[str, Any]]:
    """Search trials that ran the full budget, best first (never diverged/stopped/failed ones);
    ties go to the faster trial."""
    full = [r for r in rows if r["role"] == "search" and r["status"] == "completed" and r["epochs"] >= max_epochs]
    return sorted(full, key=lambda r: (-r["val_acc"], r["seconds"] or 0.0))


def best_trial(rows: list[dict[str, Any]], max_epochs: int) -> dict[str, Any] | None:
    """The best full-budget search trial (rank 1 of :func:`ranked_trials`)."""
    ranked = ranked_trials(rows, max_epochs)
    return ranked[0] if ranked else None


def write_best(folder: Path, rows: list[dict[str, Any]], max_epochs: int) -> Path | None:
    """``best.yaml``: the winning trial's complete train config (full budget)."""
    best = best_trial(rows, max_epochs)
    if best is None:
        return None
    path = folder / "best.yaml"
    header = f"# best of {folder.name}: trial {best['trial_id']}, val_acc {best['val_acc']:.4f}\n"
    tmp = path.with_name(".best.yaml.tmp")
    tmp.write_text(header + best["config"])
    os.replace(tmp, path)
    return path


def pair_baseline(rows: list[dict[str, Any]], row: dict[str, Any], method: str) -> dict[str, Any] | None:
    """``row``'s pair's completed baseline of ``method`` ("none": student alone, "kd"), or None."""
    for r in rows:
        if (r["role"] == "baseline" and r["method"] == method and r["status"] == "completed"
                and (r["teacher"], r["student"]) == (row["teacher"], row["student"])):  # fmt: skip
            return r
    return None


def status_counts(rows: list[dict[str, Any]]) -> str:
    """``"2 completed, 6 stopped"`` (``"none"`` for no rows)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"


def summary_lines(rows: list[dict[str, Any]], max_epochs: int, searched: list[str]) -> list[str]:
    """A plain-text table of all trials, best first, and OFA's gain over each pair's baselines."""
    if not rows:
        return ["no trials yet"]
    order = sorted(rows, key=lambda r: (r["role"] != "baseline", -(r["val_acc"] or 0.0)))
    head = (
        f"{'trial':>12} {'role':8} {'status':9} {'method':6} {'val_acc':>7} {'ep':>3} {'sec':>6} cache  pair / values"
    )
    lines = [head, "-" * len(head)]
    for r in order:
        values = " ".join(f"{p.split('.')[-1]}={_short(r.get(p))}" for p in searched if r["role"] == "search")
        lines.append(
            f"{r['trial_id']:>12} {r['role']:8} {r['status']:9} {r['method']:6} {r['val_acc'] or 0:7.4f} "
            f"{r['epochs']:>3} {r['seconds'] or 0:6.0f} {'yes' if r.get('teacher_cache') else 'no':5}  "
            f"{r['teacher']} -> {r['student']} {values}"
        )
    best = best_trial(rows, max_epochs)
    if best is not None:
        lines.append("")
        lines.append(f"best full-budget search trial: {best['trial_id']} val_acc {best['val_acc']:.4f}")
        for method in ("none", "kd"):
            base = pair_baseline(rows, best, method)
            if base is not None:
                gain = best["val_acc"] - base["val_acc"]
                name = "student alone" if method == "none" else "vanilla KD"
                lines.append(f"  vs {name}: {base['val_acc']:.4f} -> gain {gain:+.4f}")
    lines.append(f"trials: {status_counts(rows)}")
    return lines


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
