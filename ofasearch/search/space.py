"""From a search spec to Optuna: the define-by-run space, paper defaults, and back to a config.

Parameter names are the dotted paths of the spec (``distill.eps``); stage choices are filtered
per student (a 4-block ViT has all four stages, a 2-block one only 3 and 4), so their parameter
is named per student (``distill.stages__<student>``), as Optuna needs a fixed value space per
name. Lists (stages, per-stage eps) are encoded as strings because Optuna's categorical
choices must be primitives.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from ofasearch.config import AugmentSpec, Choices, DistillSpec, PairSpec, Range, Spec, TrainConfig, parse_config
from ofasearch.config.registry import METHODS, RECIPES
from ofasearch.errors import SpecError
from ofasearch.utils.formatting import encode_list

__all__ = ["PAPER_DEFAULTS", "SearchSpace", "decode", "encode"]

# The reference code's defaults (Hao840/OFAKD, distillers/ofa.py); "stages": every stage the student has.
PAPER_DEFAULTS: dict[str, Any] = {
    "distill.method": "ofa",
    "distill.temperature": 1.0,
    "distill.eps": 1.0,
    "distill.gt_weight": 1.0,
    "distill.kd_weight": 1.0,
    "distill.ofa_weight": 1.0,
}


def _is_int(path: str) -> bool:
    """Whether the train config holds an ``int`` at ``path``: its range is searched with ``suggest_int``."""
    section, key = path.split(".", 1)
    return TrainConfig.model_fields[section].annotation.model_fields[key].annotation is int


def encode(value: Any) -> Any:
    """Optuna-safe form of a value: lists become strings (``[1, 2]`` -> ``"1,2"``)."""
    return encode_list(value) if isinstance(value, list) else value


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(value, str) and re.fullmatch(r"[-0-9.eE+]+(,[-0-9.eE+]+)*", value):
        return [json.loads(v) for v in value.split(",")]
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


@dataclass
class SearchSpace:
    """The searchable part of a spec, plus each pair's available student stages.

    A :class:`TrainConfig` is a space of one point (``ofasearch train`` checks it the same way)."""

    spec: Spec | TrainConfig
    available_stages: list[list[int]]  # per pair, measured from the student

    def __post_init__(self) -> None:
        problems = []
        for i, pair in enumerate(self.pairs):
            stages = self.spec.distill.stages
            options = stages.choices if isinstance(stages, Choices) else [stages]
            if not self._stage_choices(i) and self._method_can_be("ofa"):
                problems.append(
                    f"distill.stages: none of {options} fits pairs[{i}].student {pair.student.label}, "
                    f"which has stages {self.available_stages[i]}"
                )
        problems += self._eps_problems()
        if problems:
            raise SpecError(problems)

    def _eps_problems(self) -> list[str]:
        """A per-stage eps list must fit every stage choice of every pair (one value per stage
        plus one for the final logits), else the trials that draw that combination would fail."""
        eps = self.spec.distill.eps
        options = eps.choices if isinstance(eps, Choices) else [eps]
        lists = [list(e) for e in options if isinstance(e, list)]
        if not lists or not self._method_can_be("ofa"):
            return []
        problems = []
        for values in lists:
            for i, pair in enumerate(self.pairs):
                for stages in self._stage_choices(i):
                    if len(values) != len(stages) + 1:
                        problems.append(
                            f"distill.eps: {values} has {len(values)} values, but stage choice {stages} of "
                            f"pairs[{i}].student {pair.student.model} needs {len(stages) + 1} (one per stage plus "
                            "one for the final logits); give one value, or stage choices of one length"
                        )
        return problems

    @property
    def pairs(self) -> list[PairSpec]:
        return self.spec.pairs

    def _method_can_be(self, method: str) -> bool:
        m = self.spec.distill.method
        return method in m.choices if isinstance(m, Choices) else m == method

    def _stages_given(self) -> bool:
        return self.spec.distill.stages is not None

    def _stage_choices(self, pair: int) -> list[list[int]]:
        if not self._stages_given():  # not in the spec: every stage this student has
            return [list(self.available_stages[pair])]
        stages = self.spec.distill.stages
        options = stages.choices if isinstance(stages, Choices) else [stages]
        have = set(self.available_stages[pair])
        return [list(o) for o in options if set(o) <= have]

    def stage_choices(self, pair: int) -> list[list[int]]:
        """The stage lists ``pair``'s student can take in this space."""
        return self._stage_choices(pair)

    def param_name(self, path: str, pair: int) -> str:
        if path == "distill.stages" and len(self.pairs) > 1:
            return f"{path}__{_slug(self.pairs[pair].student.label)}"
        return path

    # ------------------------------------------------------------------ Optuna define-by-run
    def define(self, trial: Any) -> dict[str, Any]:
        """Optuna define-by-run function: suggest a pair, then each searched value."""
        pair = 0
        if len(self.pairs) > 1:
            labels = [p.label for p in self.pairs]
            pair = labels.index(trial.suggest_categorical("pair", labels))
        for path, dist in self.spec.searched_values().items():
            name = self.param_name(path, pair)
            if path == "distill.stages":
                trial.suggest_categorical(name, [encode(c) for c in self._stage_choices(pair)])
            elif isinstance(dist, Choices):
                trial.suggest_categorical(name, [encode(c) for c in dist.choices])
            elif _is_int(path):
                trial.suggest_int(name, int(dist.low), int(dist.high), log=dist.log)
            else:
                trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        return {}

    def defaults(self, pair: int) -> dict[str, Any]:
        """The paper's defaults for ``pair`` as Optuna params (clipped into the searched ranges)."""
        point: dict[str, Any] = {}
        if len(self.pairs) > 1:
            point["pair"] = self.pairs[pair].label
        for path, dist in self.spec.searched_values().items():
            name = self.param_name(path, pair)
            if path == "distill.stages":
                choices = self._stage_choices(pair)
                point[name] = encode(max(choices, key=len))
            elif isinstance(dist, Choices):
                wanted = self.paper_value(pair, path)
                point[name] = encode(wanted if wanted in dist.choices else dist.choices[0])
            else:
                point[name] = _default_in_range(path, dist, self.paper_value(pair, path))
        return point

    def paper_value(self, pair: int, path: str) -> Any:
        """Where ``pair`` starts for the searched value ``path``: the pair's own setting, else its
        recipe's value, else the reference code's default (None when none of them says)."""
        spec_pair = self.pairs[pair]
        if path in spec_pair.settings:
            return spec_pair.settings[path]
        recipe = RECIPES[spec_pair.recipe or self.spec.recipe]
        return recipe.get(path, PAPER_DEFAULTS.get(path))

    # ------------------------------------------------------------------ back to a train config
    def config_for(self, params: dict[str, Any], **overrides: Any) -> TrainConfig:
        """The train config of one trial: the chosen pair, each searched value set to the param.
        ``overrides`` (dotted paths) are applied last, e.g. ``{"distill.method": "kd"}``."""
        pair = 0
        if len(self.pairs) > 1:
            pair = [p.label for p in self.pairs].index(params["pair"])
        dump = self.spec.model_dump(mode="json")
        data = {key: value for key, value in dump.items() if key in TrainConfig.model_fields}
        data["pairs"] = [{**data["pairs"][pair], "settings": {}}]
        for path, value in self.pairs[pair].settings.items():  # the pair's own values (recipe)
            _set(data, path, value)
        for path in self.spec.searched_values():
            _set(data, path, decode(params[self.param_name(path, pair)]))
        for path, value in overrides.items():
            _set(data, path.replace("__", "."), value)
        return parse_config(data, source=f"trial {params}")

    def cache_settings(self) -> DistillSpec:
        """The distill settings that decide the logit cache (method ofa unless only 'none' is searched)."""
        d = self.spec.distill
        method = "ofa" if any(self._method_can_be(m) for m, info in METHODS.items() if info.teacher) else "none"
        return DistillSpec(method=method, teacher_cache=d.teacher_cache, cache_views=d.cache_views)

    def cache_augment(self, pair: int) -> AugmentSpec | None:
        """The augmentation ``pair``'s cached teacher views are made with; None when the spec
        searches an augmentation value (each trial would then see other views)."""
        if any(path.startswith("augment.") for path in self.spec.searched_values()):
            return None
        return self.config_for(self.defaults(pair)).augment

    def pair_index_of(self, config: TrainConfig) -> int:
        """The index of ``config``'s pair among the spec's pairs."""
        labels = [(p.teacher.label, p.student.label) for p in self.pairs]
        return labels.index((config.pair.teacher.label, config.pair.student.label))


def _default_in_range(path: str, dist: Range, wanted: Any) -> float | int:
    if isinstance(wanted, (int, float)) and not isinstance(wanted, bool):
        value = min(max(float(wanted), dist.low), dist.high)
    elif dist.log:
        value = math.sqrt(dist.low * dist.high)
    else:
        value = (dist.low + dist.high) / 2
    return int(round(value)) if _is_int(path) else value


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    section, key = path.split(".", 1)
    data.setdefault(section, {})[key] = value
