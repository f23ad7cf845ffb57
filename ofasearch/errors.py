"""The two kinds of failure the CLI distinguishes: bad input (exit 2) and everything else (exit 1)."""

from __future__ import annotations

from collections.abc import Iterable


class SpecError(ValueError):
    """Invalid user input. Holds one line per problem: ``field.path: what is wrong``.

    The CLI prints the lines and exits with code 2; the Python API raises it as is so a production
    script fails with the same message the CLI would give.
    """

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems) or ["invalid input"]
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[type[SpecError], tuple[list[str]]]:
        # keep the problem list when Ray pickles the error
        return (type(self), (self.problems,))
