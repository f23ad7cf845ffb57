"""How numbers read in status lines, tables and the report."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["encode_list", "format_duration", "short"]


def format_duration(seconds: float) -> str:
    """``1:02:03`` / ``2:03``: short enough for a status line or a table cell."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def short(value: Any) -> str:
    """A searched value in a table cell: floats to 3 significant digits, the rest as they are."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def encode_list(values: list[Any]) -> str:
    """A list as one string (``[1, 2]`` -> ``"1,2"``): how list values (stages) are stored in
    ``trials.parquet`` and handed to Optuna, which takes only scalars."""
    return ",".join(json.dumps(v) for v in values)
