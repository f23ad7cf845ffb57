"""The kinds of failure the CLI distinguishes: bad input (exit 2) and everything else (exit 1),
of which a missing or damaged file with a known remedy is said in one line without a traceback."""

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


class FileFault(RuntimeError):
    """A file a command needs is missing or damaged and the remedy is known (e.g. a results table
    that ``ofasearch rebuild`` recreates). One line per problem, naming the file and the remedy;
    the CLI prints them and exits with code 1 (a fault of a file, not of the input)."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems) or ["a file is missing or damaged"]
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[type[FileFault], tuple[list[str]]]:
        return (type(self), (self.problems,))
