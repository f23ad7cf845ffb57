"""``ofasearch status DIR``: the trials so far, from the folder's files only (safe while a search
runs, works on a copied folder, loads no torch, timm or Ray)."""

from __future__ import annotations

import logging
from typing import Any

from ofasearch.results.folder import read_folder
from ofasearch.results.summary import summary_lines
from ofasearch.utils.storage import Location, as_location

__all__ = ["show_status", "status_lines"]

logger = logging.getLogger(__name__)


def status_lines(folder: str | Location) -> tuple[list[str], list[dict[str, Any]]]:
    """The lines ``status`` prints (the phase, then the trials table) and the trial rows."""
    folder = as_location(folder).resolve()
    results = read_folder(folder)
    rows = list({r["trial_id"]: r for r in results.trials}.values())  # one row per trial, as recorded
    lines = [f"{folder}: phase {results.state.get('phase', '?')}"]
    lines += summary_lines(rows, results.spec.max_epochs, list(results.spec.searched), results.state.get("val_images"))
    return lines, rows


def show_status(folder: str | Location) -> list[dict[str, Any]]:
    """Log the status lines of ``folder``; returns its trial rows."""
    lines, rows = status_lines(folder)
    for line in lines:
        logger.info(line)
    return rows
