"""Non-dominated sets of a run's trained candidates over 2 or 3 objectives, named by column.

Every objective is a lineage column with a direction (``OBJECTIVES``): fitness and accuracies are
maximised, costs minimised. Only trained candidates with every objective measured can be on a
front: a rejected candidate broke a constraint, and a failed one has no fitness.

Two objectives take one sort and a vectorised running minimum; three, one sort and a sweep that
keeps a staircase of the best (second, third) pairs seen so far, searched by bisection: O(n log n)
either way. (Checking blocks of rows against the front so far in numpy costs O(n * front size):
17 s for 30,000 rows that are all on the front, where the sweep takes 0.01 s.)
``bench/pareto_bench.py`` times 10,000 and 100,000 rows.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tvnsearch.errors import InputError, Problem
from tvnsearch.status import Status

MAXIMISE = "maximise"
MINIMISE = "minimise"
OBJECTIVES: dict[str, str] = {
    "fitness": MAXIMISE,
    "top1": MAXIMISE,
    "top5": MAXIMISE,
    "mean_ap": MAXIMISE,
    "frames_per_second": MAXIMISE,
    "cpu_ms": MINIMISE,
    "gpu_ms": MINIMISE,
    "frame_ms": MINIMISE,
    "params": MINIMISE,
    "flops": MINIMISE,
    "memory_mb": MINIMISE,
}


def check_objectives(names: Sequence[str], fields: Sequence[str], *, source: str) -> None:
    """Raise ``InputError`` naming each field whose objective is unknown or repeated, or the
    count when it is not 2 or 3."""
    problems = [
        Problem(field, f"must be one of {sorted(OBJECTIVES)}, but got {name!r}")
        for field, name in zip(fields, names, strict=True)
        if name not in OBJECTIVES
    ]
    problems += [
        Problem(fields[i], f"{name!r} is already an objective")
        for i, name in enumerate(names)
        if name in names[:i]
    ]
    if not 2 <= len(names) <= 3:
        problems.append(Problem("objectives", f"must be 2 or 3, but got {len(names)}"))
    if problems:
        raise InputError(source, problems)


def candidates(frame: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    """The trained rows with every objective measured: those a front is chosen among."""
    missing = [name for name in objectives if name not in frame.columns]
    if missing:
        raise InputError(
            "lineage", [Problem(n, "is not a column of this lineage") for n in missing]
        )
    usable = frame["status"].eq(str(Status.TRAINED)).fillna(False)
    for name in objectives:
        usable &= frame[name].notna()
    return frame[usable.to_numpy(dtype=bool)]


def pareto_front(
    frame: pd.DataFrame, objectives: Sequence[str] = ("fitness", "cpu_ms")
) -> pd.DataFrame:
    """The non-dominated rows of a lineage frame over 2 or 3 ``OBJECTIVES``, best first by the
    first objective (then the next ones), index reset.

    A row is dominated by one at least as good in every objective and better in one; rows with
    identical objective values are all kept. Only trained rows with every objective measured
    count. Unknown or repeated names, or a count other than 2 or 3, raise ``InputError``.
    """
    objectives = tuple(objectives)
    check_objectives(
        objectives, [f"objectives[{i}]" for i in range(len(objectives))], source="pareto"
    )
    rows = candidates(frame, objectives)
    costs = minimised(rows, objectives)
    keep = front_2d(costs) if len(objectives) == 2 else front_3d(costs)
    front = rows[keep]
    order = np.lexsort(costs[keep].T[::-1])
    return front.iloc[order].reset_index(drop=True)


def minimised(rows: pd.DataFrame, objectives: Sequence[str]) -> np.ndarray:
    """An (n, k) float array of the objectives, negated where maximised: lower is better."""
    signs = np.array([-1.0 if OBJECTIVES[name] == MAXIMISE else 1.0 for name in objectives])
    values = rows[list(objectives)].to_numpy(dtype=np.float64, na_value=np.nan)
    return values.reshape(len(rows), len(objectives)) * signs


def front_2d(costs: np.ndarray) -> np.ndarray:
    """Mask of the non-dominated rows of an (n, 2) array, lower better: one sort, one scan."""
    n = len(costs)
    order = np.lexsort((costs[:, 1], costs[:, 0]))
    a, b = costs[order, 0], costs[order, 1]
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])  # groups of equal a
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    # Sorted by b within a group: its first b is the group's best.
    best_in_group = b[group_start]
    running_min = np.minimum.accumulate(b)
    best_before = np.where(group_start > 0, running_min[group_start - 1], np.inf)
    keep_sorted = (b == best_in_group) & (b < best_before)
    keep = np.zeros(n, dtype=bool)
    keep[order] = keep_sorted
    return keep


def front_3d(costs: np.ndarray) -> np.ndarray:
    """Mask of the non-dominated rows of an (n, 3) array, lower better: one sort, one sweep."""
    n = len(costs)
    # In lexicographic order every dominator of a row comes before it. The rows seen so far are
    # summarised by the staircase of their (b, c) minima, b rising and c falling; a row is
    # dominated when the staircase reaches it, unless only an identical row does.
    order = np.lexsort(costs.T[::-1])
    a, b, c = (costs[order, j].tolist() for j in range(3))
    keep = [True] * n
    stair_b: list[float] = []
    stair_minus_c: list[float] = []  # -c rises with b: bisect needs ascending lists
    stair_a: list[float] = []  # the a of the first row that reached each step
    for i in range(n):
        j = bisect_right(stair_b, b[i]) - 1
        if j >= 0 and -stair_minus_c[j] <= c[i]:
            same = stair_b[j] == b[i] and -stair_minus_c[j] == c[i] and stair_a[j] == a[i]
            keep[i] = same
            continue
        lo = bisect_left(stair_b, b[i])
        hi = bisect_right(stair_minus_c, -c[i], lo)
        stair_b[lo:hi], stair_minus_c[lo:hi], stair_a[lo:hi] = [b[i]], [-c[i]], [a[i]]
    mask = np.zeros(n, dtype=bool)
    mask[order] = keep
    return mask
