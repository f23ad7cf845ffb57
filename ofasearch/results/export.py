"""``ofasearch export``: any of a search's top configs as a train config for production training,
optionally the most accurate one under a latency or size limit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ofasearch.config import parse_config
from ofasearch.errors import SpecError
from ofasearch.results.tables import load_folder_spec, ranked_trials, read_rows, student_latency

__all__ = ["choose_trial", "export_config"]


def _load(folder: Path) -> tuple[str, int, list[dict[str, Any]]]:
    spec = load_folder_spec(folder)
    return spec.name, int(spec.optim.epochs), student_latency(read_rows(folder / "trials.parquet"))


def choose_trial(
    rows: list[dict[str, Any]],
    max_epochs: int,
    rank: int = 1,
    max_latency_ms: float | None = None,
    max_params: int | None = None,
) -> dict[str, Any]:
    """The ``rank``-th best full-budget search trial among those within the limits (latency: the
    batch-1 latency of the trial's student on its device, median over that student's trials)."""
    if rank < 1:
        raise SpecError([f"--rank: {rank} is not allowed; must be >= 1 (1 = best)"])
    ranked = ranked_trials(rows, max_epochs)
    limits = []
    for flag, column, limit in (("--max-latency-ms", "latency_ms_b1", max_latency_ms),
                                ("--max-params", "params", max_params)):  # fmt: skip
        if limit is None:
            continue
        if limit <= 0:
            raise SpecError([f"{flag}: {limit:g} is not allowed; must be > 0"])
        if ranked and any(r.get(column) is None for r in ranked):
            raise SpecError([f"{flag}: this search recorded no {column} per trial (made by an older ofasearch)"])
        ranked = [r for r in ranked if r[column] <= limit]
        limits.append(f"{flag} {limit:g}")
    if rank > len(ranked):
        within = f" within {' and '.join(limits)}" if limits else ""
        raise SpecError([f"--rank: {rank} is not allowed; the search has {len(ranked)} full-budget trial(s){within}"])
    return ranked[rank - 1]


def export_config(
    folder: Path,
    output: Path | None = None,
    *,
    rank: int = 1,
    max_latency_ms: float | None = None,
    max_params: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write the chosen trial's complete train config (``ofasearch train FILE`` runs it);
    returns the file and the trial's row."""
    name, max_epochs, rows = _load(folder)
    row = choose_trial(rows, max_epochs, rank, max_latency_ms, max_params)
    config = parse_config(yaml.safe_load(row["config"]), f"trial {row['trial_id']}")
    config = config.model_copy(update={"name": f"{name}-rank{rank}"})
    output = output or folder / f"rank{rank}.yaml"
    cost = ""
    if row.get("latency_ms_b1") is not None:
        cost = f", {row['params'] / 1e6:.2f}M params, {row['latency_ms_b1']:.2f} ms/image ({row.get('device')})"
    header = (
        f"# exported from {folder} (rank {rank}): trial {row['trial_id']}, "
        f"val_acc {row['val_acc']:.4f} after {row['epochs']} epochs{cost}\n"
        "# train it: ofasearch train THIS_FILE [--workers N --gpus-per-worker G]; raise optim.epochs for production\n"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(header + config.to_yaml())
    os.replace(tmp, output)
    return output, row
