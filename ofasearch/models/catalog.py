"""``ofasearch models``: which timm models have usable stage features, their family and shapes.

timm has well over a thousand model names and some have billions of parameters, so listing must
not build them for real. Names are filtered first (``fnmatch``), each remaining model is built and
probed on PyTorch's ``meta`` device (shapes only: no weight memory, no init or forward compute),
at most ``limit`` models are shown, lines are printed as they are found, and every probe result is
kept in a small JSON file under the ofasearch cache so the next listing answers from it.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch

from ofasearch.errors import SpecError
from ofasearch.models import build_model, describe_model
from ofasearch.models import factory as _factory
from ofasearch.models import stages as _stages
from ofasearch.utils.files import atomic_write, cache_root, content_hash, file_digest

__all__ = ["DEFAULT_LIMIT", "FAMILIES", "Probe", "matching_names", "print_models", "probe", "probe_all"]

FAMILIES = ("cnn", "vit", "mlp")
DEFAULT_LIMIT = 50
_WILDCARDS = set("*?[")


@dataclass(frozen=True)
class Probe:
    """One model at one input size: its family, size and stage shapes, or why it is not usable."""

    name: str
    family: str | None = None
    params: int = 0
    stages: tuple[tuple[int, int, int, int], ...] = ()  # (paper stage, C, H, W)
    error: str | None = None

    @property
    def usable(self) -> bool:
        return self.error is None

    def line(self) -> str:
        shapes = " ".join(f"{s}:{c}x{h}x{w}" for s, c, h, w in self.stages)
        return f"{self.name:40s} {self.family:4s} {self.params / 1e6:8.2f}M  stages {shapes}"


def matching_names(pattern: str = "*") -> list[str]:
    """timm model names matching ``pattern`` (case-insensitive ``fnmatch``); a pattern without
    wildcards matches as a substring, so ``resnet`` finds ``resnet18`` and ``seresnet50``."""
    pat = pattern.strip().lower() or "*"
    if not _WILDCARDS & set(pat):
        pat = f"*{pat}*"
    return [n for n in timm.list_models() if fnmatch.fnmatchcase(n, pat)]


def _model_classes() -> dict[str, type]:
    """timm's model classes that ofasearch can build by class name (``model: MlpMixer``), by
    lower-case name: the ones with stage features (``forward_intermediates``)."""
    import torch.nn as nn

    found = {}
    for name in dir(timm.models):
        cls = getattr(timm.models, name, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module) and hasattr(cls, "forward_intermediates"):
            found[name.lower()] = cls
    return found


def _class_hint(pattern: str) -> str | None:
    """For a filter that names (or nearly names) a timm model class, how to use the class form
    the docs recommend, and the registered names built from it."""
    stem = "".join(ch for ch in pattern if ch not in "*?[]")
    classes = _model_classes()
    close = difflib.get_close_matches(stem.lower(), list(classes), n=1, cutoff=0.9)
    if not close:
        return None
    cls = classes[close[0]]
    module = cls.__module__.rsplit(".", 1)[-1]
    names = difflib.get_close_matches(cls.__name__.lower(), timm.list_models(module=module), n=3, cutoff=0.0)
    examples = f"; registered names of its module: {', '.join(names)}" if names else ""
    return (
        f"{cls.__name__} is a timm model class: use it in a spec as `model: {cls.__name__}` with its "
        f"constructor kwargs (the way to choose e.g. a small patch_size){examples}"
    )


def _no_match_error(pattern: str) -> SpecError:
    hint = _class_hint(pattern)
    if hint is not None:
        return SpecError([f"no registered timm model name matches {pattern!r}: {hint}"])
    stem = "".join(ch for ch in pattern.lower() if ch not in "*?[]") or pattern
    names = timm.list_models()
    close = difflib.get_close_matches(stem, names, n=3, cutoff=0.5)
    if not close:  # a partial name: try names that share its start
        close = [n for n in names if n.startswith(stem[:4])][:3]
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return SpecError([f"no timm model name matches {pattern!r}{hint}"])


def _probe_on(name: str, image_size: int, device: str) -> Probe:
    with torch.device(device):
        model = build_model(name, num_classes=10, in_chans=3, image_size=image_size)
        info = describe_model(model, (3, image_size, image_size))
    stages = tuple((s, v.channels, v.height, v.width) for s, v in sorted(info.stage_shapes.items()))
    return Probe(name, info.family, sum(p.numel() for p in model.parameters()), stages)


def probe(name: str, image_size: int = 32) -> Probe:
    """Build ``name`` (no weights) and measure family and stage shapes at ``image_size``; a model
    that fails (too small an input, no ``forward_intermediates``, …) gives a Probe with ``error``.

    Runs on the ``meta`` device; only when an operation has no meta implementation is the model
    built for real on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _probe_on(name, image_size, "meta")
        except Exception as exc:  # any failure means "not usable here"
            first = exc
        if isinstance(first, RuntimeError) and "meta" in str(first).lower():  # NotImplementedError too
            try:
                return _probe_on(name, image_size, "cpu")
            except Exception as exc:
                first = exc
    text = str(first.problems[0] if isinstance(first, SpecError) else first).splitlines()
    return Probe(name, error=f"{type(first).__name__}: {text[0] if text else ''}"[:200])


def _store_path(image_size: int) -> Path:
    """One file per (timm, torch, ofasearch.models sources, size): a new version never reads stale shapes."""
    sources = [file_digest(m.__file__) for m in (_factory, _stages)]
    tag = content_hash({"sources": sources, "timm": timm.__version__, "torch": torch.__version__}, length=12)
    return cache_root() / "model-catalog" / f"{tag}-{image_size}px.json"


def _load(path: Path) -> dict[str, Probe]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for d in raw if isinstance(raw, list) else []:
        try:
            out[d["name"]] = Probe(**{**d, "stages": tuple(tuple(int(v) for v in s) for s in d["stages"])})
        except (KeyError, TypeError, ValueError):
            continue  # an entry from another format: probe that model again
    return out


def _save(path: Path, probes: dict[str, Probe]) -> None:
    data = [asdict(p) for p in probes.values()]
    try:
        atomic_write(path, json.dumps(data))
    except OSError:
        pass  # a read-only cache only costs speed


def probe_all(names: list[str], image_size: int = 32, *, cache: bool = True) -> Iterator[Probe]:
    """:func:`probe` each name in order, answering from (and adding to) the on-disk store."""
    path = _store_path(image_size) if cache else None
    known = _load(path) if path is not None else {}
    added = 0
    try:
        for name in names:
            result = known.get(name)
            if result is None:
                result = known[name] = probe(name, image_size)
                added += 1
                if path is not None and added % 20 == 0:
                    _save(path, known)
            yield result
    finally:
        if path is not None and added:
            _save(path, known)


def print_models(
    family: str | None = None,
    pattern: str = "*",
    image_size: int = 32,
    *,
    limit: int = DEFAULT_LIMIT,
    verbose: bool = False,
    out: Callable[[str], None] | None = None,
) -> int:
    """Print each usable model matching ``pattern`` (and ``family``), one flushed line at a time,
    until ``limit`` are shown (0: no limit), then a count. Returns the number shown.

    Raises SpecError for bad arguments or a pattern that matches no timm name."""
    emit = out or (lambda line: print(line, flush=True))
    problems = []
    if family is not None and family not in FAMILIES:
        problems.append(f"--family: {family!r} is not one of {', '.join(FAMILIES)}")
    if image_size < 8:
        problems.append(f"--image-size: {image_size} is too small; must be >= 8")
    if limit < 0:
        problems.append(f"--limit: {limit} is not allowed; must be >= 0 (0: no limit)")
    if problems:
        raise SpecError(problems)
    names = matching_names(pattern)
    if not names:
        raise _no_match_error(pattern)
    shown = unusable = other = checked = 0
    with closing(probe_all(names, image_size)) as results:  # closing: the store is saved on break too
        for result in results:
            checked += 1
            if not result.usable:
                unusable += 1
                if verbose:
                    emit(f"{result.name:40s} -     not usable at {image_size}px: {result.error}")
            elif family is not None and result.family != family:
                other += 1
            else:
                emit(result.line())
                shown += 1
                if limit and shown >= limit:
                    break
    parts = [f"{unusable} not usable at {image_size}px"] + ([f"{other} of other families"] if family else [])
    emit(f"{shown} shown of {checked} checked ({', '.join(parts)})")
    rest = len(names) - checked
    if rest:
        emit(f"{rest} more matching names not checked (--limit {limit}); narrow the filter or pass --limit 0")
    return shown
