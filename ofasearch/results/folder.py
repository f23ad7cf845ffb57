"""Reading a results folder: ``spec.yaml``, ``state.json`` and the two tables.

A folder may have been written by an earlier ofasearch, or on a machine whose timm knows other
models, so readers never re-validate it the way a new search is: model names are not checked, and
when today's schema rejects the spec anyway (a key it no longer knows) the few fields the readers
need are taken from the raw YAML, with one warning line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ofasearch.config import (
    Choices,
    ModelSpec,
    OptimSpec,
    Range,
    SearchSettings,
    Spec,
    first_rung_after_warmup,
    parse_spec,
    read_yaml,
)
from ofasearch.errors import FileFault, SpecError
from ofasearch.results.tables import EPOCHS_FILE, TRIALS_FILE, read_rows, rebuild_hint
from ofasearch.results.tune_folders import started_trials
from ofasearch.utils.storage import Location, ObjectPath, as_location

__all__ = [
    "SPEC_FILE",
    "STATE_FILE",
    "FolderSpec",
    "PairNames",
    "ResultsFolder",
    "load_folder_spec",
    "read_folder",
    "read_folder_spec",
    "read_epochs",
    "read_state",
    "read_tables",
    "read_trials",
]

logger = logging.getLogger(__name__)

SPEC_FILE = "spec.yaml"  # the spec a results folder was run with
STATE_FILE = "state.json"  # the search's phase, stages and teachers


@dataclass(frozen=True)
class PairNames:
    """A pair as the tables name it (``ModelSpec.label``), plus the kwargs that tell models apart."""

    teacher: str
    student: str
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    student_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FolderSpec:
    """What the readers (status, report, export) need from ``spec.yaml``."""

    name: str
    max_epochs: int  # optim.epochs: the full budget
    pairs: list[PairNames]
    searched: dict[str, Range | Choices]  # dotted path -> distribution, in the spec's order
    dataset: str
    image_size: int | None
    search: SearchSettings  # num_samples and the ASHA settings, for the report's header


@dataclass
class ResultsFolder:
    """A results folder, read once: spec, state and trials (epochs on first use)."""

    path: Location  # a folder on a file system, or on an object store (s3://...)
    spec: FolderSpec
    state: dict[str, Any]
    trials: list[dict[str, Any]]

    @cached_property
    def epochs(self) -> list[dict[str, Any]]:
        return read_epochs(self.path, self.trials)


def _require_folder(folder: Location) -> Location:
    path = folder / SPEC_FILE
    if not path.is_file():
        raise SpecError([f"{folder}: not an ofasearch results folder (no {SPEC_FILE})"])
    return path


def load_folder_spec(folder: Location, *, check_models: bool = False) -> Spec:
    """The folder's spec validated strictly by today's schema (for resuming a search; readers use
    :func:`read_folder_spec`). ``check_models`` also checks model names against timm."""
    path = _require_folder(folder)
    return parse_spec(read_yaml(path), str(path), check_models=check_models).resolve_paths(Path.cwd())


def read_folder_spec(folder: Location) -> FolderSpec:
    """The readers' view of ``spec.yaml``: validated without the model check, else read leniently."""
    path = _require_folder(folder)
    data = read_yaml(path)
    try:
        spec = parse_spec(data, str(path), check_models=False)
    except SpecError as exc:
        if not isinstance(data, dict):
            raise
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        logger.warning(f"{path}: read leniently, today's schema rejects it: {exc.problems[0]}{more}")
        return _from_raw(data, path)
    return _from_spec(spec)


def _from_spec(spec: Spec) -> FolderSpec:
    return FolderSpec(
        name=spec.name,
        max_epochs=int(spec.optim.epochs),
        pairs=[
            PairNames(p.teacher.label, p.student.label, dict(p.teacher.kwargs), dict(p.student.kwargs))
            for p in spec.pairs
        ],
        searched=dict(spec.searched_values()),
        dataset=spec.data.dataset,
        image_size=spec.data.image_size,
        search=spec.search,
    )


def _from_raw(data: dict[str, Any], path: Location) -> FolderSpec:
    """The readers' fields from a spec today's schema rejects; missing ones take today's defaults."""
    optim = _section(data, "optim")
    try:
        max_epochs = int(optim.get("epochs", OptimSpec.model_fields["epochs"].default))
    except (TypeError, ValueError):
        raise SpecError([f"{path}: optim.epochs: {optim.get('epochs')!r} is not a number of epochs"]) from None
    settings = _section(data, "search")
    known = {k: v for k, v in settings.items() if k in SearchSettings.model_fields}
    try:
        search = SearchSettings.model_validate(known)
    except ValueError:
        search = SearchSettings()
    if search.grace_epochs is None:  # as the schema resolves it
        warmup = optim.get("warmup_epochs", OptimSpec.model_fields["warmup_epochs"].default)
        try:
            search.grace_epochs = first_rung_after_warmup(max_epochs, warmup)
        except (TypeError, ValueError):
            search.grace_epochs = 1
    data_section = _section(data, "data")
    return FolderSpec(
        name=str(data.get("name", Spec.model_fields["name"].default)),
        max_epochs=max_epochs,
        pairs=_raw_pairs(data),
        searched=_raw_searched(data),
        dataset=str(data_section.get("dataset", "?")),
        image_size=data_section.get("image_size"),
        search=search,
    )


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _raw_model(entry: Any) -> tuple[str, dict[str, Any]]:
    """(label, kwargs) of a raw model entry; the label is ``ModelSpec.label``'s, unvalidated."""
    entry = entry if isinstance(entry, dict) else {}
    kwargs = entry.get("kwargs") if isinstance(entry.get("kwargs"), dict) else {}
    return ModelSpec.model_construct(model=str(entry.get("model", "?")), kwargs=kwargs).label, kwargs


def _raw_pairs(data: dict[str, Any]) -> list[PairNames]:
    if isinstance(data.get("pairs"), list):
        entries = [(p.get("teacher"), p.get("student")) for p in data["pairs"] if isinstance(p, dict)]
    else:  # teachers x students, expanded as the schema does
        entries = [(t, s) for t in data.get("teachers") or [] for s in data.get("students") or []]
    pairs = []
    for teacher, student in entries:
        (t_label, t_kwargs), (s_label, s_kwargs) = _raw_model(teacher), _raw_model(student)
        pairs.append(PairNames(t_label, s_label, t_kwargs, s_kwargs))
    return pairs


def _raw_searched(data: dict[str, Any]) -> dict[str, Range | Choices]:
    """Every ``{low, high, log}`` or ``{choices: [...]}`` value of distill and optim, in the schema's order."""
    found: dict[str, Range | Choices] = {}
    for section in ("distill", "optim"):
        order = list(getattr(Spec.model_fields[section].annotation, "model_fields", {}))  # as the schema lists them
        items = sorted(
            _section(data, section).items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)
        )
        for key, value in items:
            if not isinstance(value, dict):
                continue
            try:
                found[f"{section}.{key}"] = (
                    Choices.model_validate(value) if "choices" in value else Range.model_validate(value)
                )
            except ValueError:
                continue  # not a distribution this version understands: nothing to plot for it
    return found


def read_state(folder: Location) -> dict[str, Any]:
    """``state.json`` ({} before the search wrote it). An empty or broken one (a crash of the file
    system under a write) falls back to ``state.json.bak``, the version before the last write,
    with one warning line; when that is broken too, a one-line SpecError."""
    path = folder / STATE_FILE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            raise ValueError(f"a JSON {type(state).__name__}, not an object")
        return state
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, not an object
        problem = "empty" if not path.stat().st_size else f"invalid JSON ({exc})"
    backup = path.with_name(f"{STATE_FILE}.bak")
    try:
        state = json.loads(backup.read_text())
    except (OSError, ValueError):
        state = None
    if not isinstance(state, dict):
        raise SpecError([f"{path}: {problem}, and no readable {backup.name} to fall back to"])
    logger.warning(f"{path}: {problem}; using {backup.name}, the state before its last update")
    return state


def read_trials(folder: Location) -> list[dict[str, Any]]:
    """``trials.parquet``'s rows; [] before the search started a trial. Missing while Ray Tune's
    folders show started trials (it was deleted), or damaged: a FileFault naming the file and
    the command that rebuilds it."""
    path = folder / TRIALS_FILE
    if path.is_file():
        return read_rows(path)
    started = started_trials(folder)
    if started:
        raise FileFault(
            [
                f"{path}: missing, though Ray Tune's folders hold {started} started trial(s) of this search; "
                f"{rebuild_hint(folder)}"
            ]
        )
    return []


def read_epochs(folder: Location, trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``epochs.parquet``'s rows; missing while ``trials`` have run epochs, or damaged: a FileFault."""
    path = folder / EPOCHS_FILE
    if not path.is_file() and any((r.get("epochs") or 0) > 0 for r in trials):
        raise FileFault([f"{path}: missing, though {TRIALS_FILE} records trained epochs; {rebuild_hint(folder)}"])
    return read_rows(path)


def read_tables(folder: Location) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Both tables, checked as :func:`read_trials` and :func:`read_epochs` do (what a resume
    needs before it continues a search)."""
    trials = read_trials(folder)
    return trials, read_epochs(folder, trials)


def read_folder(folder: str | Path | ObjectPath) -> ResultsFolder:
    """Read a results folder for status, report or export (never Ray's state: works on a copy),
    on a file system or an object store."""
    folder = as_location(folder)
    spec = read_folder_spec(folder)
    return ResultsFolder(folder, spec, read_state(folder), read_trials(folder))
