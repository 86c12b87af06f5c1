"""Deployment constraints of a search: budgets on runtime, parameters, memory and FLOPs.

Every budget is optional (None = unconstrained). They are checked here, at the boundary: a budget
that no network could meet is an error naming the field, never a search that rejects everything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from tvnsearch.errors import InputError, Problem

# The time budget that applies to a profiler of each device kind.
TIME_LIMITS = {"cpu": "max_cpu_ms", "cuda": "max_gpu_ms"}
_COUNTS = ("max_params", "max_flops")
_FIELDS = (
    "max_cpu_ms",
    "max_gpu_ms",
    "max_params",
    "max_memory_mb",
    "max_flops",
    "max_frame_ms",
    "min_frames_per_second",
)
# Budgets on a live stream, judged on the first profiled device (the CPU when it is profiled).
FRAME_LIMITS = ("max_frame_ms", "min_frames_per_second")


@dataclass(frozen=True)
class Constraints:
    max_cpu_ms: float | None = None  # median per-clip runtime on the CPU profiler
    max_gpu_ms: float | None = None  # median per-clip runtime on the GPU profiler
    max_params: int | None = None
    max_memory_mb: float | None = None  # peak memory of one forward pass, model included
    max_flops: int | None = None
    # Per new frame of a live stream: a pipelined network (pipeline_depth > 0) steps once per
    # frame; a clip network reruns its whole clip (see tvnsearch.measure.stream_timing).
    max_frame_ms: float | None = None
    min_frames_per_second: float | None = None

    # Every budget is a positive number (``_why_bad`` checks them; a recipe test walks these).
    LIMITS: ClassVar[dict[str, str]] = dict.fromkeys(_FIELDS, "> 0")

    def __post_init__(self) -> None:
        problems = _value_problems(dataclasses.asdict(self))
        if problems:
            raise InputError("constraints", problems)

    def set_fields(self) -> dict[str, float]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def constraints_from_dict(
    data: Any, *, source: str = "constraints", name: str | None = None
) -> Constraints:
    """Read a ``[constraints]`` table, naming every unknown key and bad value (as
    ``name.key`` when the table has a ``name``, a recipe's ``constraints``)."""
    if not isinstance(data, dict):
        why = f"must be a table, but got {type(data).__name__}"
        raise InputError(source, [Problem(name or "constraints", why)])
    known = {f.name for f in dataclasses.fields(Constraints)}
    problems = [Problem(k, "unknown key") for k in data if k not in known]
    problems += _value_problems(data)
    if problems:
        prefix = f"{name}." if name else ""
        raise InputError(source, [Problem(prefix + p.field, p.message) for p in problems])
    return Constraints(**data)


def check_feasible(constraints: Constraints, num_classes: int, *, source: str) -> None:
    """Refuse budgets below what the smallest possible network needs (its classifier alone)."""
    # The narrowest network ends in one channel: a classifier of num_classes weights and biases,
    # and 2 FLOPs per weight.
    floors = {"max_params": 2 * num_classes, "max_flops": 2 * num_classes}
    problems = [
        Problem(
            name,
            f"no network fits: the smallest classifier alone needs {floor:,}, but got {value:,}",
        )
        for name, floor in floors.items()
        if (value := getattr(constraints, name)) is not None and value < floor
    ]
    if problems:
        raise InputError(source, problems)


def _value_problems(data: dict[str, Any]) -> list[Problem]:
    return [
        Problem(name, why)
        for name in _FIELDS
        if data.get(name) is not None and (why := _why_bad(name, data[name])) is not None
    ]


def _why_bad(name: str, value: Any) -> str | None:
    if name in _COUNTS:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be a whole number, but got {value!r}"
    elif not isinstance(value, int | float) or isinstance(value, bool):
        return f"must be a number, but got {value!r}"
    if not value > 0:  # also catches NaN
        return f"must be > 0, but got {value!r}"
    return None
