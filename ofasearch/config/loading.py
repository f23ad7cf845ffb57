"""Reading YAML into validated configs; every problem becomes one ``field.path: message`` line."""

from __future__ import annotations

import difflib
import os
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ofasearch.config.schema import DATASETS, MODEL_CHECK, Spec, TrainConfig
from ofasearch.errors import SpecError
from ofasearch.utils.storage import ObjectPath, as_location

__all__ = ["format_errors", "load_config", "load_spec", "parse_config", "parse_spec", "read_yaml"]


def read_yaml(path: str | os.PathLike | ObjectPath) -> Any:
    """Read a YAML file (a path or an object-store URI); a missing file or a syntax error becomes a
    one-line :class:`SpecError`."""
    p = as_location(path)
    if not p.is_file():
        raise SpecError([f"{p}: no such file"])
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError([f"{p}:{where}: invalid YAML: {what}"]) from None


M = typing.TypeVar("M", bound=Spec)


def _parse(cls: type[M], data: Any, source: str, check_models: bool) -> M:
    if not isinstance(data, dict):
        raise SpecError([f"{source}: expected a mapping at the top level, got {type(data).__name__}"])
    context = {}
    if check_models:
        # The one lazy import of an upper layer: model names are checked against the installed
        # timm, which only code that is about to build models needs (readers of results don't).
        from ofasearch.models.factory import unknown_model_message

        context[MODEL_CHECK] = unknown_model_message
    try:
        return cls.model_validate(data, context=context)
    except ValidationError as exc:
        raise SpecError(format_errors(exc, cls, data)) from None


def parse_spec(data: Any, source: str = "spec", *, check_models: bool = True) -> Spec:
    """Validate a search spec given as a dict; ``check_models`` also checks model names in timm."""
    return _parse(Spec, data, source, check_models)


def parse_config(data: Any, source: str = "config", *, check_models: bool = True) -> TrainConfig:
    """Validate a train config given as a dict; ``check_models`` also checks model names in timm."""
    return _parse(TrainConfig, data, source, check_models)


def load_spec(path: str | os.PathLike, *, check_models: bool = True) -> Spec:
    """Load and validate a search spec; paths in it are resolved against the current directory."""
    return parse_spec(read_yaml(path), str(path), check_models=check_models).resolve_paths(Path.cwd())


def load_config(path: str | os.PathLike, *, check_models: bool = True) -> TrainConfig:
    """Load and validate a train config (one pair, constants only), as ``ofasearch train`` does."""
    return parse_config(read_yaml(path), str(path), check_models=check_models).resolve_paths(Path.cwd())


def format_errors(exc: ValidationError, root: type[BaseModel], data: Any = None) -> list[str]:
    """One ``field.path: message`` line per pydantic error, with close matches for typo'd keys.

    ``data`` is the input: where it gave ``teachers`` and ``students`` (expanded into ``pairs``
    before validation), a problem is reported at the entry the user wrote, once."""
    lines: list[str] = []
    for err in exc.errors():
        loc = _as_written(err["loc"], data)
        path = _dotted(loc)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = sorted(_fields_at(root, err["loc"][:-1]))
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            message = f"unknown key{hint} (allowed: {', '.join(allowed)})"
        elif err["type"] == "literal_error":
            given = err.get("input")
            expected = err.get("ctx", {}).get("expected", "")
            close = difflib.get_close_matches(str(given), list(DATASETS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close and loc[-1] == "dataset" else ""
            message = f"{given!r} is not allowed{hint} (allowed: {expected})"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif "input" in err and err["type"] not in ("value_error", "assertion_error"):
            message = f"{message} (got {err['input']!r})"
        line = f"{path}: {message}" if path else message
        if line not in lines:
            lines.append(line)
    return lines


def _as_written(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """``pairs[k].teacher...`` -> ``teachers[i]...`` when the pairs came from teachers x students."""
    if not (isinstance(data, dict) and isinstance(data.get("students"), list) and data["students"]):
        return loc
    if len(loc) >= 3 and loc[0] == "pairs" and isinstance(loc[1], int) and loc[2] in ("teacher", "student"):
        i, j = divmod(loc[1], len(data["students"]))
        return ("teachers", i, *loc[3:]) if loc[2] == "teacher" else ("students", j, *loc[3:])
    return loc


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _fields_at(root: type[BaseModel], loc: tuple[Any, ...]) -> set[str]:
    """The allowed keys of the section at ``loc`` (walks list and optional annotations)."""
    cls: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if isinstance(cls, type) else None
        if field is None:
            return set()
        cls = _first_model(field.annotation)
        if cls is None:
            return set()
    return set(cls.model_fields) if isinstance(cls, type) and issubclass(cls, BaseModel) else set()


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None
