"""timm models as ofasearch sees them: creation, stage features, family, normalisation.

No per-model code: every model that implements timm's ``forward_intermediates()`` and
``feature_info`` works. The paper's stages 1..4 are mapped onto the model's own feature list
(:func:`stage_indices`), and CNN-map vs token branches are decided from the model's actual
feature layout (:func:`is_token_model`), not from its name.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import timm
import timm.models
from timm.data import resolve_model_data_config
from torch import nn

from ofasearch.errors import SpecError
from ofasearch.models import zoo  # noqa: F401  (registers the paper's own models with timm)

__all__ = ["FILE_KWARGS", "build_model", "kwargs_problem", "normalization", "unknown_model_message"]

# timm.create_model's arguments that make it read a file or fetch weights (checkpoint_path is
# torch.load-ed; a pretrained_cfg names a `file` or hub id; cache_dir points the hub's downloads
# elsewhere): weights come only through a spec's `pretrained`/`checkpoint`, which ofasearch checks
FILE_KWARGS = ("checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


@functools.lru_cache(maxsize=1)
def _timm_names() -> tuple[str, ...]:
    return tuple(timm.list_models())


def _model_class(name: str) -> type[nn.Module] | None:
    cls = getattr(timm.models, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


def unknown_model_message(name: str) -> str | None:
    """None if ``name`` is a timm model name or class, else a message with close matches."""
    if timm.is_model(name) or _model_class(name) is not None:
        return None
    close = difflib.get_close_matches(name, _timm_names(), n=3, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return f"unknown timm model {name!r}{hint} (see `ofasearch models`)"


def kwargs_problem(kwargs: dict[str, Any]) -> str | None:
    """Why model ``kwargs`` (from a spec or a student folder's config.json) are refused: one of
    :data:`FILE_KWARGS`, which would make timm load a file the spec's checks never saw."""
    for key in kwargs:
        if key in FILE_KWARGS:
            return (
                f"kwargs.{key}: not allowed (kwargs may not hold {', '.join(FILE_KWARGS)}: they make timm "
                "load weights or a file); use the model's pretrained: or checkpoint: instead"
            )
    return None


def build_model(
    name: str,
    kwargs: dict[str, Any] | None = None,
    *,
    num_classes: int,
    in_chans: int,
    image_size: int,
    pretrained: bool = False,
) -> nn.Module:
    """Create a timm model for this data: classes and channels from the data, ``img_size`` too
    when the model takes it (unless ``kwargs`` set it). ``kwargs`` that load files are refused
    (:func:`kwargs_problem`)."""
    problem = kwargs_problem(kwargs or {})
    if problem:
        raise SpecError([f"model {name!r}: {problem}"])
    args = dict(kwargs or {})
    args.update(num_classes=num_classes, in_chans=in_chans)
    cls = _model_class(name) if not timm.is_model(name) else None
    if cls is None and unknown_model_message(name):
        raise SpecError([unknown_model_message(name) or ""])
    with_size = {"img_size": image_size, **args}
    for attempt in (with_size, args):
        try:
            if cls is not None:
                return cls(**attempt)
            return timm.create_model(name, pretrained=pretrained, **attempt)
        except TypeError as exc:
            if "img_size" in str(exc) and attempt is with_size and "img_size" not in args:
                continue  # this model has no img_size argument
            raise SpecError([f"model {name!r}: bad kwargs {kwargs}: {exc}"]) from None
        except (OSError, RuntimeError, ValueError) as exc:
            if pretrained and _looks_like_download_error(exc):
                raise SpecError(
                    [
                        f"model {name!r}: pretrained weights need the Hugging Face hub, which is "
                        f"unreachable here ({type(exc).__name__}); download them elsewhere and set "
                        "checkpoint: /path/to/weights.safetensors instead of pretrained: true"
                    ]
                ) from None
            raise
    raise AssertionError("unreachable")


def _looks_like_download_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(w in text for w in ("connect", "resolve", "offline", "hub", "http", "network", "url"))


def normalization(model: nn.Module, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's own mean/std (timm's data config of the model), averaged down when the data
    has another number of channels (grayscale)."""
    cfg = resolve_model_data_config(model)
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    if in_chans != len(mean):
        mean = (sum(mean) / len(mean),) * in_chans
        std = (sum(std) / len(std),) * in_chans
    return mean, std
