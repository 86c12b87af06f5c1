"""The one exception type for bad user input (what is wrong, where, and which field), and the one
line that a record keeps of any other exception."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: the field's path (e.g. ``blocks[2].spatial_kernel``)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InputError(ValueError):
    """A file or value a user handed over cannot be used; lists every problem found."""

    def __init__(self, source: str, problems: list[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.source}: {problem}" for problem in self.problems]

    def __reduce__(self) -> tuple[type, tuple[str, list[Problem]]]:
        return type(self), (self.source, list(self.problems))  # it crosses processes (Ray)


class Notice(UserWarning):
    """What a user should know of a command that went on: a damaged file left out, a cache that
    did not parse and is rebuilt. The command line prints each as one line."""


class SearchStopped(RuntimeError):
    """A failure that would repeat for every later candidate (a profiler that keeps dying, data
    that is gone): the search stops with this one line, its run folder resumable as it is."""


def describe_error(exc: BaseException, *, limit: int = 500) -> str:
    """``Type: first line of the message``: the one-line reason a record keeps of ``exc`` (its
    whole traceback belongs in a log)."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text[:limit]
