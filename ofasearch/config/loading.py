"""Reading YAML into validated configs; every problem becomes one ``field.path: message`` line."""

from __future__ import annotations

import copy
import difflib
import os
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ofasearch.config.schema import DATASETS, MODEL_CHECK, ModelSpec, Spec, TrainConfig
from ofasearch.errors import SpecError
from ofasearch.utils.storage import ObjectPath, as_location

__all__ = [
    "apply_overrides",
    "format_errors",
    "load_config",
    "load_spec",
    "parse_config",
    "parse_spec",
    "read_yaml",
]


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

ModelCheck = Callable[[str], str | None]
"""A model name -> None when it can be built, else the message saying why not."""
_model_check: list[ModelCheck] = []


def install_model_check(check: ModelCheck) -> None:
    """Set what ``check_models=True`` asks about each model name. The package installs timm's
    check when it is imported (``ofasearch/__init__.py``, which loads timm only when a name is
    checked), so this layer never imports the layers above it."""
    _model_check[:] = [check]


def _parse(cls: type[M], data: Any, source: str, check_models: bool) -> M:
    if not isinstance(data, dict):
        raise SpecError([f"{source}: expected a mapping at the top level, got {type(data).__name__}"])
    context = {}
    if check_models:  # only code about to build models asks timm (readers of results don't)
        if not _model_check:
            raise RuntimeError("no model check installed (ofasearch/__init__.py installs timm's)")
        context[MODEL_CHECK] = _model_check[0]
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


def load_spec(path: str | os.PathLike, *, check_models: bool = True, overrides: Sequence[str] = ()) -> Spec:
    """Load and validate a search spec; paths in it are resolved against the current directory.
    ``overrides`` (``key=value``, see :func:`apply_overrides`) are applied before validation."""
    data = apply_overrides(read_yaml(path), overrides, Spec)
    return parse_spec(data, str(path), check_models=check_models).resolve_paths(Path.cwd())


def load_config(path: str | os.PathLike, *, check_models: bool = True, overrides: Sequence[str] = ()) -> TrainConfig:
    """Load and validate a train config (one pair, constants only), as ``ofasearch train`` does.
    ``overrides`` (``key=value``, see :func:`apply_overrides`) are applied before validation."""
    data = apply_overrides(read_yaml(path), overrides, TrainConfig)
    return parse_config(data, str(path), check_models=check_models).resolve_paths(Path.cwd())


def apply_overrides(data: Any, overrides: Sequence[str], root: type[BaseModel]) -> Any:
    """``data`` with each ``key=value`` of ``overrides`` set (the command line's ``--set``): the
    key is a dotted path into the document (``optim.lr``, ``pairs[0].student.kwargs.depth`` or
    ``pairs.0...``), the value is read as YAML (``0.01``, ``true``, ``[3, 4]``, ``{low: 1, high: 2}``).
    A key the schema does not have is a SpecError naming it (the value is then checked with the
    rest of the document)."""
    if not overrides:
        return data
    data = copy.deepcopy(data) if isinstance(data, dict) else {}
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--set {item}: expected key=value, e.g. --set optim.lr=0.002")
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            problems.append(f"--set {key}: value {text!r} is not valid YAML ({getattr(exc, 'problem', exc)})")
            continue
        try:
            _set_path(data, _key_path(key), value, root)
        except ValueError as exc:
            problems.append(f"--set {key}: {exc}")
    if problems:
        raise SpecError(problems)
    return data


def _key_path(key: str) -> list[str | int]:
    """``pairs[0].student.model`` / ``pairs.0.student.model`` -> ["pairs", 0, "student", "model"]."""
    parts: list[str | int] = []
    for piece in key.replace("[", ".").replace("]", "").split("."):
        if piece == "":
            raise ValueError("empty part in the key")
        parts.append(int(piece) if piece.isdigit() else piece)
    return parts


def _set_path(data: dict[str, Any], path: list[str | int], value: Any, root: type[BaseModel]) -> None:
    """Set ``value`` at ``path`` in ``data``, checking every key against the schema on the way
    (below a free-form mapping such as ``kwargs`` any key goes)."""
    node: Any = data
    checked = True  # still inside schema sections
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        where = _dotted(tuple(path[:depth])) or "the document"
        if isinstance(part, int):
            if not isinstance(node, list):
                raise ValueError(f"{where} is not a list")
            if part >= len(node):
                raise ValueError(f"{where} has {len(node)} entries; no index {part}")
        else:
            if checked:
                section, loc = _schema_of(root, path, depth)
                allowed = _fields_at(section, loc)
                if depth == 0 and isinstance(data.get(part), list) and part in SHORTHAND:
                    allowed = {part}
                if allowed and part not in allowed:
                    close = difflib.get_close_matches(part, sorted(allowed), n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                    raise ValueError(f"unknown key '{part}' in {where}{hint} (allowed: {', '.join(sorted(allowed))})")
                if depth == 0 and part == "pairs" and "pairs" not in data and SHORTHAND[0] in data:
                    raise ValueError(
                        "the file gives teachers + students, not pairs: set teachers[i]... or students[j]..."
                    )
                section, loc = _schema_of(root, path, depth + 1)
                checked = bool(allowed) and bool(_fields_at(section, loc))
            if not isinstance(node, dict):
                raise ValueError(f"{where} is not a mapping")
        if last:
            node[part] = value
        elif isinstance(part, int):
            node = node[part]
        else:
            child = node.get(part)
            if not isinstance(child, (dict, list)):
                child = node[part] = {}
            node = child


SHORTHAND = ("teachers", "students")  # lists of models, expanded into pairs before validation


def _schema_of(root: type[BaseModel], path: list[str | int], depth: int) -> tuple[type[BaseModel], tuple[Any, ...]]:
    """The schema section and location below it that ``path[:depth]`` points into
    (``teachers[0].kwargs`` lies in a :class:`ModelSpec`, not in the document's fields)."""
    if path and path[0] in SHORTHAND and depth >= 1:
        return ModelSpec, tuple(path[2:depth]) if depth >= 2 else ()
    return root, tuple(path[:depth])


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
