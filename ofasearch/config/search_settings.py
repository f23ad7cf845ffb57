"""How a search runs: its settings (trials, scheduler, baselines, confirmation, constraints,
time limits) and the resources each trial gets."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from ofasearch.config.registry import (
    BASELINE_METHODS,
    BASELINE_PRESETS,
)
from ofasearch.config.tunable import (
    Strict,
)

__all__ = ["ConfirmSettings", "Constraints", "ResourcesSpec", "SearchSettings"]


class ConfirmSettings(Strict):
    """After the search: the ``top_k`` best distinct full-budget configs and every pair's baselines
    are trained again until each has ``seeds`` runs (the search's own run is the first), so the
    winner and its gains are means over seeds with an interval, not one lucky run."""

    top_k: int = Field(default=3, ge=1)
    seeds: int = Field(default=3, ge=2)


def _baseline_list(value: Any) -> Any:
    """``true`` (the spelling before methods could be chosen) is every baseline, ``false`` none;
    a method named twice is an error."""
    if value is True or value is False:
        return list(BASELINE_METHODS) if value else []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        twice = sorted({m for m in value if isinstance(m, str) and value.count(m) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} given twice")
    return value


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def _duration(value: Any) -> Any:
    """Seconds from a number or a duration such as ``90s``, ``30m``, ``2h`` or ``1h30m``."""
    if not isinstance(value, str):
        return value
    match = _DURATION.match(value)
    if not value.strip() or match is None or not any(match.groups()):
        raise ValueError(f"{value!r} is not a duration; allowed: seconds (e.g. 600) or e.g. 90s, 30m, 2h, 1h30m")
    hours, minutes, seconds = (float(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


GPU_SHARES = "allowed: auto, 0 (the CPU), a fraction of one GPU (e.g. 0.25, 0.5) or a whole number of GPUs"


def _gpu_share(value: Any) -> Any:
    """``auto`` or a number of GPUs >= 0, refused in one line that says what is allowed."""
    if value == "auto":
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not allowed; {GPU_SHARES}") from None
    if isinstance(value, bool) or not number >= 0:
        raise ValueError(f"{value!r} is not allowed; {GPU_SHARES}")
    return number


class Constraints(Strict):
    """Limits every student must meet to be searched at all (each optional), measured once at
    plan time on the trial device type (``ofasearch.search.plan``): ``max_params`` counts the
    deployed student's own parameters (exit branches are training-only and not counted),
    ``max_flops`` its forward FLOPs per image, ``max_latency_ms`` the median eval forward at
    batch 1 and the data's image size."""

    max_params: int | None = Field(default=None, gt=0)
    max_latency_ms: float | None = Field(default=None, gt=0)
    max_flops: int | None = Field(default=None, gt=0)

    def limits(self) -> dict[str, float]:
        """The limits given, by field name."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class SearchSettings(Strict):
    """Ray Tune settings of a search."""

    num_samples: int = Field(default=8, ge=1)
    grace_epochs: int | None = Field(default=None, ge=1)
    """ASHA's first rung. None: the first epoch after the warm-up (see Spec.first_rung_after_warmup)"""
    reduction_factor: int = Field(default=3, ge=2)
    max_concurrent: int = Field(default=2, ge=1)
    baselines: Annotated[list[Literal[BASELINE_METHODS]], BeforeValidator(_baseline_list)] = Field(
        default_factory=lambda: list(BASELINE_METHODS)
    )
    """per pair, at full budget with the pair's defaults; true: all of them, false or []: none type: ignore[valid-type]
    """
    baseline_preset: Literal[tuple(BASELINE_PRESETS)] = "authors"
    """the settings the baselines train with: each method's authors' (per dataset) or the OFA paper's type:
    ignore[valid-type]
    """
    searcher: Literal["tpe", "random"] = "tpe"
    startup_trials: int | None = Field(default=None, ge=0)
    """trials TPE draws at random before it models the results (not counting the paper defaults); None: the rule in
    ofasearch.search.searcher.default_startup_trials
    """
    confirm: ConfirmSettings | None = None
    warm_start: str | None = None
    """a finished search's folder whose trials the new study starts from (ofasearch.search.warm_start)"""
    constraints: Constraints | None = None
    """students that cannot meet these are dropped before any teacher trains (ofasearch.search.plan)"""
    trial_timeout: Annotated[float | None, BeforeValidator(_duration)] = Field(default=None, gt=0)
    """seconds (or 90s, 30m, 2h): a trial running longer ends as an error ("timed out after ...") and the search goes
    on, so a hung step (a dead network mount, a deadlocked collective) never holds it. None: no limit
    """


class ResourcesSpec(Strict):
    """What one trial (or ``ofasearch train``) runs on."""

    workers_per_trial: int = Field(default=1, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: Annotated[float | Literal["auto"], BeforeValidator(_gpu_share)] = 0.0
    """a fraction of one GPU (several trials share it), whole GPUs, or auto: one GPU per worker when the Ray
    cluster has GPUs, and a search packs as many one-worker trials on a GPU as still raise their summed img/s
    (measured before the first trial, ofasearch.search.packing), else the CPU
    """
    backend: Literal["auto", "local", "ray-train"] = "auto"

    @field_validator("gpus_per_worker")
    @classmethod
    def _whole_above_one(cls, v: float | str) -> float | str:
        # Ray counts a fraction of one GPU (several trials packed on it) or whole GPUs, never 1.5
        if v != "auto" and v > 1 and v != int(v):
            raise ValueError(f"{v:g} is not allowed; {GPU_SHARES}")
        return v

    def gpus(self) -> float:
        """``gpus_per_worker`` as a number, once ``auto`` has been resolved (a search resolves it before any
        trial starts, ``ofasearch train`` when it reads its flags)."""
        if self.gpus_per_worker == "auto":
            raise ValueError("resources.gpus_per_worker: auto must be resolved before it is used as a number")
        return float(self.gpus_per_worker)

    @model_validator(mode="after")
    def _local_is_one_process(self) -> ResourcesSpec:
        if self.backend == "local" and self.workers_per_trial > 1:
            raise ValueError(
                f"workers_per_trial: {self.workers_per_trial} needs backend ray-train (or auto); "
                "the local backend trains in one process"
            )
        return self
