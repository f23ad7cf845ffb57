"""Console output through :mod:`logging`: every module logs to ``ofasearch.<module>``; the CLI (or
a user's script) decides where it goes. Nothing here changes logging for code outside ofasearch."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["console_logging"]


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (pytest's capture, a redirected stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


@contextmanager
def console_logging(level: int = logging.INFO) -> Iterator[None]:
    """Print ofasearch's messages as plain lines on stdout while the block runs; restore after."""
    logger = logging.getLogger("ofasearch")
    handler = _CurrentStdout()
    handler.setFormatter(logging.Formatter("%(message)s"))
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
