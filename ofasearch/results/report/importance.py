"""How much each searched value mattered, by ``optuna.importance`` over the finished search trials."""

from __future__ import annotations

import warnings
from typing import Any

from ofasearch.config import Range
from ofasearch.results.outcome import FINISHED
from ofasearch.results.report.data import ReportData, category

__all__ = ["param_importances"]


def param_importances(data: ReportData) -> tuple[dict[str, float] | None, str]:
    """Optuna's importance of each searched value (and of the pair) for the best val accuracy.

    Fed the finished search trials (completed and ASHA-stopped, each with its best val accuracy):
    with a handful of full-budget trials the stopped ones carry most of the signal. Uses fANOVA
    (a seeded random forest over every trial, deterministic) rather than Optuna 5's default
    PED-ANOVA, which judges by the top 10% of trials, i.e. by one trial in searches this small.
    Returns the importances, or None and a one-line reason.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    dists: dict[str, Any] = {}
    for path, dist in data.searched.items():
        if isinstance(dist, Range):
            dists[path] = FloatDistribution(dist.low, dist.high, log=dist.log)
        else:
            dists[path] = CategoricalDistribution(list(dict.fromkeys(category(c) for c in dist.choices)))
    if len(data.pairs) > 1:
        dists["pair"] = CategoricalDistribution([f"{t} -> {s}" for t, s in data.pairs])

    def value(row: dict[str, Any], name: str) -> Any:
        if name == "pair":
            return f"{row['teacher']} -> {row['student']}"
        v = row.get(name)
        return None if v is None else (category(v) if isinstance(dists[name], CategoricalDistribution) else v)

    rows = [r for r in data.search if r["status"] in FINISHED and r.get("val_acc") is not None]
    names = [n for n in dists if rows and all(value(r, n) is not None for r in rows)]  # common to every row
    varying = [n for n in names if len({repr(value(r, n)) for r in rows}) > 1]
    if len(rows) < 2 or not varying:
        return None, (
            f"Not enough to estimate importances: {len(rows)} finished search trial(s) "
            f"and {len(varying)} value(s) that vary between them (needs at least 2 trials and 1 such value)."
        )
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "trial added" lines; restored below
    try:
        study = optuna.create_study(direction="maximize")
        for r in rows:
            try:
                trial = optuna.trial.create_trial(
                    params={n: value(r, n) for n in varying},
                    distributions={n: dists[n] for n in varying},
                    value=float(r["val_acc"]),
                )
            except ValueError:  # a value outside the spec's range (spec edited after the run)
                continue
            study.add_trial(trial)
        if len(study.trials) < 2:
            return None, "Not enough to estimate importances: fewer than 2 trials fit the spec's search space."
        with warnings.catch_warnings():  # fANOVA's experimental-feature warnings, for this call only
            warnings.simplefilter("ignore")
            found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0), params=varying)
    finally:
        optuna.logging.set_verbosity(old)
    return dict(found), f"fANOVA over {len(study.trials)} finished search trials."
