"""``ofasearch status DIR``: the trials so far, from the folder's files only (safe while a search
runs, works on a copied folder, loads no torch, timm or Ray). On a storage root (a folder whose
sub-folders are searches) it lists the searches instead, one line each. ``--format json|csv``
gives the same as records, for scripts."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

from ofasearch.errors import FileFault, SpecError
from ofasearch.results.folder import SPEC_FILE, read_folder
from ofasearch.results.ranking import best_trial, status_counts
from ofasearch.results.summary import summary_lines
from ofasearch.utils.storage import Location, as_location

__all__ = ["search_records", "searches_under", "show_status", "status_lines", "status_table"]

logger = logging.getLogger(__name__)


def status_lines(folder: str | Location) -> tuple[list[str], list[dict[str, Any]]]:
    """The lines ``status`` prints (the phase, then the trials table) and the trial rows."""
    folder = as_location(folder).resolve()
    results = read_folder(folder)
    rows = list({r["trial_id"]: r for r in results.trials}.values())  # one row per trial, as recorded
    lines = [f"{folder}: phase {results.state.get('phase', '?')}"]
    lines += summary_lines(rows, results.spec.max_epochs, list(results.spec.searched), results.state.get("val_images"))
    return lines, rows


def searches_under(root: Path) -> list[Path]:
    """The search folders directly under a storage root (those holding a ``spec.yaml``), by name."""
    return sorted(p.parent for p in Path(root).glob(f"*/{SPEC_FILE}") if p.is_file())


def _is_storage_root(folder: Location) -> bool:
    """A local folder without a spec whose sub-folders hold searches (object stores: not listed)."""
    return isinstance(folder, Path) and not (folder / SPEC_FILE).is_file() and bool(searches_under(folder))


def search_records(root: Path) -> list[dict[str, Any]]:
    """One record per search under ``root``: name, phase, trials by status and the best
    full-budget trial (a folder that cannot be read says why in ``error``)."""
    records = []
    for folder in searches_under(root):
        record: dict[str, Any] = {"name": folder.name, "folder": str(folder.resolve())}
        try:
            results = read_folder(folder)
        except (SpecError, FileFault) as exc:  # e.g. a deleted table: the line says how to rebuild it
            records.append({**record, "error": exc.problems[0]})
            continue
        rows = list({r["trial_id"]: r for r in results.trials}.values())
        best = best_trial(rows, results.spec.max_epochs)
        search = [r for r in rows if r["role"] == "search"]
        record.update(
            phase=str(results.state.get("phase", "?")),
            dataset=results.spec.dataset,
            pairs=len(results.spec.pairs),
            search_trials=f"{len(search)} of {results.spec.search.num_samples}",
            trials=status_counts(rows),
            best_trial=best["trial_id"] if best else None,
            best_val_acc=round(best["val_acc_mean"], 4) if best else None,
            error=None,
        )
        records.append(record)
    return records


def _root_lines(root: Path) -> list[str]:
    records = search_records(root)
    lines = [f"{Path(root).resolve()}: {len(records)} search(es)"]
    head = f"{'name':24} {'phase':10} {'search trials':14} {'best trial':>12} {'val_acc':>7}  trials"
    lines += [head, "-" * len(head)]
    for r in records:
        if r.get("error"):
            lines.append(f"{r['name']:24} unreadable: {r['error']}")
            continue
        acc = f"{r['best_val_acc']:7.4f}" if r["best_val_acc"] is not None else f"{'-':>7}"
        lines.append(
            f"{r['name']:24} {r['phase']:10} {r['search_trials']:14} {r['best_trial'] or '-':>12} {acc}  {r['trials']}"
        )
    lines.append("details of one: ofasearch status <storage>/<name>")
    return lines


def show_status(folder: str | Location) -> list[dict[str, Any]]:
    """Log the status lines of ``folder`` (or the list of searches of a storage root); returns
    the trial rows (the search records for a root)."""
    folder = as_location(folder)
    if _is_storage_root(folder):
        for line in _root_lines(folder):
            logger.info(line)
        return search_records(folder)
    lines, rows = status_lines(folder)
    for line in lines:
        logger.info(line)
    return rows


def status_table(folder: str | Location, fmt: str) -> str:
    """The trial rows of ``folder`` (the search records of a storage root) as ``json`` (a list of
    objects) or ``csv`` (a header, then one line per record); floats that are NaN/inf become null."""
    folder = as_location(folder)
    if _is_storage_root(folder):
        records = search_records(folder)
    else:
        _, records = status_lines(folder)
    records = [{k: _plain(v) for k, v in r.items()} for r in records]
    if fmt == "json":
        return json.dumps(records, indent=1) + "\n"
    if fmt != "csv":
        raise SpecError([f"--format: {fmt!r} is not allowed (allowed: text, json, csv)"])
    columns: list[str] = []
    for r in records:
        columns += [k for k in r if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def _plain(value: Any) -> Any:
    """A value JSON and CSV can carry: NaN/inf as None, other non-primitive values as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)
