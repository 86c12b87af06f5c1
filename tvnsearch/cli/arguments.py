"""Argument types of the command line: a value outside its range is refused by argparse in one
line naming the range (exit 2). A flag that sets a recipe setting takes the setting's own range,
its class's ``LIMITS``, so a flag and a recipe key never disagree."""

from __future__ import annotations

import argparse
import math
import typing
from collections.abc import Callable
from typing import Any

from tvnsearch.search.recipe import allowed_range, within_limits


def integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An integer from ``minimum`` (to ``maximum``)."""
    allowed = f">= {minimum}" if maximum is None else f"from {minimum:,} to {maximum:,}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be an integer {allowed}, but got {text!r}")
        return value

    return parse


def seconds(maximum: float) -> Callable[[str], float]:
    """A number of seconds from 0 to ``maximum``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0 <= value <= maximum:  # NaN fails too
            why = f"must be a number of seconds from 0 to {maximum:g}, but got {text!r}"
            raise argparse.ArgumentTypeError(why)
        return value

    return parse


def setting(cls: type, key: str) -> Callable[[str], Any]:
    """A value for the field ``key`` of a recipe table's class ``cls`` (an int or a float, as
    the field is), within the class's ``LIMITS``."""
    kind = int if int in _types(typing.get_type_hints(cls)[key]) else float
    allowed = allowed_range(cls, key)
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not within_limits(cls, key, value):
            why = f"must be {noun}{f' {allowed}' if allowed else ''}, but got {text!r}"
            raise argparse.ArgumentTypeError(why)
        return value

    return parse


def _types(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) or (hint,)
