"""Seeing ofasearch's console lines in tests: a handler on the ``ofasearch`` logger."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class _Lines(logging.Handler):
    def __init__(self, on_line: Callable[[str], None]):
        super().__init__(logging.INFO)
        self.on_line = on_line

    def emit(self, record: logging.LogRecord) -> None:
        self.on_line(record.getMessage())


@contextmanager
def log_lines(on_line: Callable[[str], None] | None = None) -> Iterator[list[str]]:
    """Collect every INFO line ofasearch logs in the block (and pass each to ``on_line``)."""
    lines: list[str] = []

    def take(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    logger = logging.getLogger("ofasearch")
    handler, old_level = _Lines(take), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
