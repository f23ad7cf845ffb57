"""``ofasearch report``: one self-contained HTML page that explains a finished (or running) search.

The page is meant to be mailed around or opened from a cluster's shared disk, so it has no
external references: every plot is a base64 PNG inside the page and the CSS is inline. The same
PNGs are also written to ``<folder>/report/`` for slides. It only reads the experiment folder
(``spec.yaml``, ``state.json``, ``trials.parquet``, ``epochs.parquet``), never Ray's state, so it
works on a copied folder and while a search still runs.

``data`` computes what the page shows, ``plots`` draws it, ``importance`` asks Optuna what
mattered, ``html`` fills the ``page.html`` template.
"""

from __future__ import annotations

import logging

from ofasearch.errors import SpecError
from ofasearch.results.report import plots
from ofasearch.results.report.data import decision_candidates, load
from ofasearch.results.report.html import render_page
from ofasearch.results.report.importance import param_importances
from ofasearch.utils.files import atomic_write
from ofasearch.utils.storage import Location, as_location

__all__ = ["PLOT_NAMES", "write_report"]

logger = logging.getLogger(__name__)

PLOT_NAMES = ("decision", "learning_curves", "searched_values", "importance", "pareto")


def write_report(folder: str | Location, top_k: int = 10) -> Location:
    """Write ``folder/report.html`` (self-contained) and its PNGs under ``folder/report/``.

    Raises :class:`~ofasearch.errors.SpecError` when ``folder`` is not a results folder or holds
    no trials yet. Safe while a search runs: it reads only the atomically rewritten tables.
    """
    folder = as_location(folder)
    if top_k < 1:
        raise SpecError([f"top_k: {top_k} is not allowed; must be >= 1"])
    data = load(folder)
    pngs: dict[str, bytes] = {}
    notes: dict[str, str] = {}
    candidates = decision_candidates(data)
    if candidates[0]:
        pngs["decision"] = plots.decision(data, candidates[0])
    else:
        notes["decision"] = "No searched config or baseline has run the full budget yet: nothing to choose from."
    if data.epochs:
        pngs["learning_curves"] = plots.learning_curves(data)
    else:
        notes["learning_curves"] = "No epoch has been reported yet."
    if data.searched and any(r["status"] != "running" for r in data.search):
        pngs["searched_values"] = plots.searched_values(data)
    else:
        notes["searched_values"] = "Nothing to show: the spec searches no value, or no search trial has finished."
    importances, detail = param_importances(data)
    if importances:
        pngs["importance"] = plots.importance(importances)
        notes["importance_detail"] = detail
    else:
        notes["importance"] = detail
    measured = data.has("latency_ms_b1")
    if measured and any(data.full_budget(r) and r.get("latency_ms_b1") is not None for r in data.search):
        pngs["pareto"] = plots.pareto(data)
    else:
        notes["pareto"] = (
            "No full-budget trial with a measured latency yet."
            if measured
            else "This search has no cost columns (params, FLOPs, latency) in trials.parquet; "
            "searches run with a newer ofasearch measure them."
        )
    out = folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    for name in PLOT_NAMES:  # no stale PNG from an earlier report of the same folder
        if name not in pngs:
            (out / f"{name}.png").unlink(missing_ok=True)
    for name, png in pngs.items():
        (out / f"{name}.png").write_bytes(png)
    path = atomic_write(folder / "report.html", render_page(data, top_k, pngs, notes, candidates).encode("utf-8"))
    logger.info(f"report: {path} ({len(pngs)} plots; PNGs in {out})")
    return path
