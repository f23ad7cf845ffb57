"""From a search spec to Optuna: the define-by-run space, paper defaults, and back to a config.

The space is conditional: a parameter exists only where a choice makes it matter. The
composition's structure is drawn first (``distill.method``, ``distill.logit_loss``,
``distill.stages``, ``distill.branch_loss``); then only the settings its terms read
(``DistillSpec.active_settings``): ``dkd_beta`` only when DKD is on the logits, ``branch_loss``
and ``ofa_weight`` only with branches (``stages: []`` has none), and so on. Every baseline is a
point of such a space, so its result can be told to the study (:meth:`SearchSpace.params_of`).

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ofasearch.config import AugmentSpec, Choices, DistillSpec, PairSpec, Range, Spec, TrainConfig, parse_config
from ofasearch.config.registry import BASELINE_METHODS, METHODS, RECIPES, baseline_settings
from ofasearch.errors import SpecError
from ofasearch.utils.formatting import encode_list

__all__ = ["PAPER_DEFAULTS", "STRUCTURE", "NotInSpace", "SearchSpace", "as_composition", "decode", "encode"]

# The reference code's defaults (Hao840/OFAKD, distillers/ofa.py); "stages": every stage the student has.
PAPER_DEFAULTS: dict[str, Any] = {
    "distill.method": "ofa",
    "distill.logit_loss": "ofa",
    "distill.branch_loss": "ofa",
    "distill.logit_standardize": False,
    "distill.branch_standardize": False,
    "distill.temperature": 1.0,
    "distill.eps": 1.0,
    "distill.gt_weight": 1.0,
    "distill.kd_weight": 1.0,
    "distill.ofa_weight": 1.0,
}


# the values that decide which others exist, drawn first and in this order
STRUCTURE = ("distill.method", "distill.logit_loss", "distill.stages", "distill.branch_loss")

Distribution = Range | Choices
Pick = Callable[[str, str, Distribution, list[Any] | None], Any]
"""(Optuna name, dotted path, its distribution, the encoded choices of a categorical or None)
-> the value (encoded) of one parameter of a point."""


class NotInSpace(ValueError):
    """A config that is not a point of the space (a value outside a range or the choices)."""


def as_composition(distill: DistillSpec) -> DistillSpec:
    """A baseline as the composition it is: its method's loss on the final logits, no branches
    (``method: dist`` is ``method: ofa, logit_loss: dist, stages: []``)."""
    if distill.method not in BASELINE_METHODS or distill.method == "none":
        return distill
    return distill.model_copy(update={"method": "ofa", "logit_loss": distill.method, "stages": []})


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
    return [] if value == "" else value


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
        if self.spec.distill.logit_loss is not None and not self._method_can_be("ofa"):
            problems.append(
                f"distill.logit_loss: composes losses only with method ofa, but method is {self.spec.distill.method}; "
                "a baseline's loss is its method"
            )
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
                for stages in filter(None, self._stage_choices(i)):  # no branches: the last value is used
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
        """Optuna define-by-run function: suggest a pair, the composition's structure, then each
        searched value the drawn composition uses."""

        def suggest(name: str, path: str, dist: Distribution, choices: list[Any] | None) -> Any:
            if choices is not None:
                return trial.suggest_categorical(name, choices)
            assert isinstance(dist, Range)
            if _is_int(path):
                return trial.suggest_int(name, int(dist.low), int(dist.high), log=dist.log)
            return trial.suggest_float(name, dist.low, dist.high, log=dist.log)

        pair = 0
        if len(self.pairs) > 1:
            labels = [p.label for p in self.pairs]
            pair = labels.index(trial.suggest_categorical("pair", labels))
        self._walk(pair, suggest)
        return {}

    def _walk(self, pair: int, pick: Pick) -> dict[str, Any]:
        """The params of one point of ``pair``: the structure first, then every searched value it
        makes active, each value from ``pick``."""
        searched = self.spec.searched_values()
        order = [p for p in STRUCTURE if p in searched] + [p for p in searched if p not in STRUCTURE]
        params: dict[str, Any] = {}
        chosen: dict[str, Any] = {}
        for path in order:
            if not self._active(pair, path, chosen):
                continue
            name, dist = self.param_name(path, pair), searched[path]
            params[name] = pick(name, path, dist, self._encoded_choices(pair, path, dist))
            chosen[path] = decode(params[name])
        return params

    def _encoded_choices(self, pair: int, path: str, dist: Distribution) -> list[Any] | None:
        if path == "distill.stages":
            return [encode(c) for c in self._stage_choices(pair)]
        return [encode(c) for c in dist.choices] if isinstance(dist, Choices) else None

    def _constant(self, pair: int, path: str) -> Any:
        """``path``'s value for ``pair`` when it is not searched (the pair's setting, else the spec's)."""
        if path in self.pairs[pair].settings:
            return self.pairs[pair].settings[path]
        section, key = path.split(".", 1)
        return getattr(getattr(self.spec, section), key)

    def structure(self, pair: int, chosen: dict[str, Any]) -> DistillSpec:
        """The composition so far: the structure values drawn (``chosen``, by path) or constant;
        the ones not drawn yet at their defaults."""
        values: dict[str, Any] = {}
        for path in STRUCTURE:
            value = chosen[path] if path in chosen else self._constant(pair, path)
            if not isinstance(value, (Range, Choices)):
                values[path.split(".", 1)[1]] = value
        if values.get("method", "ofa") != "ofa":
            values.pop("logit_loss", None)
        return DistillSpec.model_construct(**values)

    def _active(self, pair: int, path: str, chosen: dict[str, Any]) -> bool:
        section, key = path.split(".", 1)
        return section != "distill" or key in self.structure(pair, chosen).active_settings()

    def defaults(self, pair: int) -> dict[str, Any]:
        """The paper's defaults for ``pair`` as Optuna params (clipped into the searched ranges):
        OFA-KD on the logits and on every stage's branch."""
        point: dict[str, Any] = {}
        if len(self.pairs) > 1:
            point["pair"] = self.pairs[pair].label
        point.update(self._walk(pair, lambda _n, path, dist, choices: self._default(pair, path, dist, choices)))
        return point

    def _default(self, pair: int, path: str, dist: Distribution, choices: list[Any] | None) -> Any:
        if path == "distill.stages":
            return encode(max(self._stage_choices(pair), key=len))
        if choices is not None:
            wanted = encode(self.paper_value(pair, path))
            return wanted if wanted in choices else choices[0]
        assert isinstance(dist, Range)
        return _default_in_range(path, dist, self.paper_value(pair, path))

    def params_of(self, config: TrainConfig) -> dict[str, Any]:
        """``config`` as the params of a point of this space (a baseline's result told to the
        study). A baseline is taken as the composition it is (:func:`as_composition`) unless the
        spec searches its method. Raises :class:`NotInSpace`, saying which value does not fit:
        a searched value outside its range or choices, or a setting the config's terms read that
        differs from the spec's constant."""
        try:
            pair = self.pair_index_of(config)
        except ValueError:
            raise NotInSpace(f"pair {config.pair.label} is not in this spec") from None
        distill = config.distill
        method = self.spec.distill.method
        if not (isinstance(method, Choices) and distill.method in method.choices):
            distill = as_composition(distill)
        point = config.model_copy(update={"distill": distill})
        searched = self.spec.searched_values()
        for key in sorted(distill.active_settings()):
            path = f"distill.{key}"
            constant = self._constant(pair, path)
            fixed = path not in searched and not isinstance(constant, (Range, Choices))
            if fixed and constant != getattr(distill, key):
                raise NotInSpace(f"{path} is {getattr(distill, key)!r}, the spec's is {constant!r}")

        def read(_name: str, path: str, dist: Distribution, choices: list[Any] | None) -> Any:
            value = encode(_dotted(point, path))
            if choices is not None:
                if value not in choices:
                    raise NotInSpace(f"{path} {value!r} is not among the choices {choices}")
                return value
            assert isinstance(dist, Range)
            if not (isinstance(value, (int, float)) and dist.low <= value <= dist.high):
                raise NotInSpace(f"{path} {value!r} is outside [{dist.low:g}, {dist.high:g}]")
            return value

        params = {"pair": self.pairs[pair].label} if len(self.pairs) > 1 else {}
        params.update(self._walk(pair, read))
        return params

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
        for path, dist in self.spec.searched_values().items():  # an inactive one: its default
            name = self.param_name(path, pair)
            if name in params:
                value = params[name]
            else:
                value = self._default(pair, path, dist, self._encoded_choices(pair, path, dist))
            _set(data, path, decode(value))
        for path, value in overrides.items():
            _set(data, path.replace("__", "."), value)
        return parse_config(data, source=f"trial {params}")

    def baseline_overrides(self, method: str) -> dict[str, Any]:
        """What turns a pair's defaults into baseline ``method`` (dotted paths, for
        :meth:`config_for`): the method, no exit branches, and its settings from
        ``search.baseline_preset`` for this dataset (``config.registry.BASELINE_PRESETS``)."""
        preset = self.spec.search.baseline_preset if isinstance(self.spec, Spec) else "authors"
        return {
            "distill.method": method,
            "distill.logit_loss": None,
            "distill.logit_standardize": False,
            "distill.stages": [],
            **baseline_settings(preset, self.spec.data.dataset, method),
        }

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


def _dotted(config: TrainConfig, path: str) -> Any:
    section, key = path.split(".", 1)
    return getattr(getattr(config, section), key)


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    section, key = path.split(".", 1)
    data.setdefault(section, {})[key] = value
