"""Accuracy over seeds, and gains that say whether they are more than noise.

A trial's config may have been trained again on further seeds by the confirmation phase (rows
``role: confirm`` whose ``confirms`` names the original trial). A config's accuracy is then the
mean over its runs, and its gain over a baseline the mean *paired* difference (same seeds) with a
95 % t-interval over those seeds. With one seed only, the interval is the sampling noise of the
validation images alone (a normal approximation for two accuracies on ``val_images`` images); it
leaves out the seed-to-seed spread, and says so.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from ofasearch.results.outcome import FINISHED, is_full_budget

__all__ = ["CONFIRM", "Gain", "SeedRuns", "mean_accuracy", "mean_interval", "paired_gain", "seed_runs"]

CONFIRM = "confirm"  # role of the rows the confirmation phase adds
Z95 = 1.959963984540054  # two-sided 95 % quantile of the normal distribution


@dataclass(frozen=True)
class SeedRuns:
    """The completed runs of one config, by seed: ``accuracies[seed] = val_acc``."""

    accuracies: dict[int, float]

    @property
    def n(self) -> int:
        return len(self.accuracies)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies.values()) if self.accuracies else 0.0

    def mean_or(self, score: float | None) -> float:
        """The mean over seeds, or ``score`` (the trial's recorded one) when no run ended normally."""
        return self.mean if self.n else float(score or 0.0)

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (None for a single run)."""
        return statistics.stdev(self.accuracies.values()) if self.n > 1 else None


@dataclass(frozen=True)
class Gain:
    """``mean`` accuracy difference (config − baseline) with its 95 % interval [``low``, ``high``]
    over ``n`` paired seeds; ``kind`` is ``"t"`` (over seeds), ``"binomial"`` (one seed:
    validation-set noise only) or ``"none"`` (one seed, validation size unknown: no interval)."""

    mean: float
    low: float
    high: float
    n: int
    kind: str

    @property
    def within_noise(self) -> bool:
        return self.low <= 0.0 <= self.high

    def verdict(self, name: str) -> str:
        """``"better than vanilla KD"``, ``"worse than ..."``, ``"within noise"`` or ``"noise not measured"``."""
        if self.kind == "none":
            return "noise not measured"
        if self.within_noise:
            return "within noise"
        return f"{'better' if self.mean > 0 else 'worse'} than {name}"

    def text(self) -> str:
        """``+0.0440 [95% CI +0.0210, +0.0670; 3 paired seeds]``."""
        if self.kind == "none":
            return f"{self.mean:+.4f} (1 seed, no interval: validation size unknown)"
        where = f"{self.n} paired seeds" if self.kind == "t" else "1 seed, val-set noise only"
        return f"{self.mean:+.4f} [95% CI {self.low:+.4f}, {self.high:+.4f}; {where}]"


def seed_runs(rows: list[dict[str, Any]], row: dict[str, Any]) -> SeedRuns:
    """``row``'s own run (when it ended normally: a trial ASHA stopped keeps its score) and its
    completed confirmation runs, by seed."""
    runs = [row] if row["status"] in FINISHED else []
    runs += [r for r in rows if r.get("role") == CONFIRM and r.get("confirms") == row["trial_id"]]
    return SeedRuns({int(r["seed"]): float(r["val_acc"] or 0.0) for r in runs if r["status"] in FINISHED})


def mean_accuracy(rows: list[dict[str, Any]], row: dict[str, Any]) -> float:
    """A trial's mean accuracy over its seeds (its recorded score when none ended normally)."""
    return seed_runs(rows, row).mean_or(row["val_acc"])


def paired_gain(
    rows: list[dict[str, Any]],
    config: dict[str, Any],
    baseline: dict[str, Any],
    val_images: int | None,
    *,
    max_epochs: int,
) -> Gain | None:
    """The gain of ``config`` over ``baseline`` on the seeds both ran; None when they share none,
    or when either did not run the full budget: a score ASHA took after fewer epochs says nothing
    about how the config compares with a baseline trained to the end."""
    if not (is_full_budget(config, max_epochs) and is_full_budget(baseline, max_epochs)):
        return None
    mine, theirs = seed_runs(rows, config).accuracies, seed_runs(rows, baseline).accuracies
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    diffs = [mine[s] - theirs[s] for s in seeds]
    mean = statistics.fmean(diffs)
    half = mean_interval(diffs)
    if half is not None:
        return Gain(mean, mean - half, mean + half, len(seeds), "t")
    if not val_images:
        return Gain(mean, -math.inf, math.inf, 1, "none")
    p, q = mine[seeds[0]], theirs[seeds[0]]
    half = Z95 * math.sqrt((p * (1 - p) + q * (1 - q)) / val_images)
    return Gain(mean, mean - half, mean + half, 1, "binomial")


def mean_interval(values: list[float]) -> float | None:
    """Half-width of the 95 % t-interval of the mean of ``values`` (runs over seeds, or paired
    differences), None for fewer than two: one run says nothing about the seed-to-seed spread."""
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)
