"""Hypervolume: how much of the objective space a run's front covers, as one number that grows
whenever the front advances or spreads, and how it grew, candidate by candidate.

Over 2 or 3 ``OBJECTIVES`` (lineage columns), it is the area (volume) dominated by the trained
candidates and bounded by a reference point, in the objectives' own units. The reference point:

- the run's constraint on the column where it has one (``max_cpu_ms`` for ``cpu_ms``,
  ``min_frames_per_second`` for ``frames_per_second``, ...): the region the search was asked to
  cover, fixed before it starts, so that runs of one recipe compare whatever their strategy;
- else 0 for a maximised column: no fitness or accuracy is lower, so every candidate counts;
- else, for a minimised column, 10 % beyond its largest value among the trained candidates of
  the lineage (so that the candidate at that extreme still adds its share): fixed along one
  run's curve, but it moves as the run goes on, so compare such figures within a run only.

A candidate no better than the reference in every objective adds nothing. Without objectives
named, fitness is measured against the first runtime the run constrains or measured (``cpu_ms``,
else ``gpu_ms``), else against ``params``, which every trained candidate has: so any run, one
searched for fitness alone too, has a front to measure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tvnsearch.errors import InputError
from tvnsearch.inspect.pareto import (
    MAXIMISE,
    OBJECTIVES,
    candidates,
    check_objectives,
    front_2d,
    front_3d,
    minimised,
)
from tvnsearch.measure.constraints import Constraints
from tvnsearch.status import Status

if TYPE_CHECKING:
    from tvnsearch.search.recipe import RunConfig

RUNTIMES = ("cpu_ms", "gpu_ms")  # the columns a default front is measured against, in order
MILESTONES = (0.25, 0.5, 0.75)  # shares of the candidates told at which ``status`` reports it
MARGIN = 1.1  # how far beyond the largest trained value a reference lies, as the module doc says


@dataclass(frozen=True)
class Reference:
    """The objectives a hypervolume is measured over and the point it is measured from."""

    objectives: tuple[str, ...]
    point: tuple[float, ...]  # per objective, in its own units; NaN: nothing measured yet
    basis: tuple[str, ...]  # why each: a constraint's name, "lowest possible", ...


def volume(costs: np.ndarray, reference: np.ndarray) -> float:
    """The hypervolume of an (n, 2) or (n, 3) array, lower better, up to ``reference``: a sum of
    rectangles along the first column (2 objectives), or of slabs along the third (3)."""
    costs = costs[(costs < reference).all(axis=1)]
    if costs.shape[1] == 3:
        costs = costs[np.argsort(costs[:, 2], kind="stable")]
        depths = np.diff(np.r_[costs[:, 2], reference[2]])
        areas = [volume(costs[: i + 1, :2], reference[:2]) for i in range(len(costs))]
        return float(np.dot(areas, depths))
    costs = costs[np.lexsort((costs[:, 1], costs[:, 0]))]
    widths = np.diff(np.r_[costs[:, 0], reference[0]])
    return float(np.dot(widths, reference[1] - np.minimum.accumulate(costs[:, 1])))


def default_objectives(
    frame: pd.DataFrame, limits: Mapping[str, float] | None = None
) -> tuple[str, str]:
    """Fitness against the first runtime constrained by ``limits`` or measured on a trained
    candidate, else against ``params``."""
    trained = candidates(frame, ("fitness",))
    runtimes = [
        n for n in RUNTIMES if n in (limits or {}) or (n in trained and trained[n].notna().any())
    ]
    return ("fitness", runtimes[0] if runtimes else "params")


def limits_of(constraints: Constraints) -> dict[str, float]:
    """The constraints as limits on lineage columns: ``max_cpu_ms`` bounds ``cpu_ms``, ..."""
    limits = {name[4:]: float(v) for name, v in constraints.set_fields().items()}
    return {column: limit for column, limit in limits.items() if column in OBJECTIVES}


def reference_for(
    frame: pd.DataFrame,
    objectives: Sequence[str] | None = None,
    limits: Mapping[str, float] | None = None,
) -> Reference:
    """The reference point of ``objectives`` (default: ``default_objectives``) under ``limits``
    (column -> constraint), as the module doc says; unknown objectives raise ``InputError``."""
    limits = limits or {}
    objectives = tuple(objectives or default_objectives(frame, limits))
    check_objectives(
        objectives, [f"objectives[{i}]" for i in range(len(objectives))], source="hypervolume"
    )
    rows = candidates(frame, objectives)
    point, basis = [], []
    for name in objectives:
        if name in limits:
            prefix = "max_" if OBJECTIVES[name] != MAXIMISE else "min_"
            point.append(limits[name])
            basis.append(f"{prefix}{name}")
        elif OBJECTIVES[name] == MAXIMISE:
            point.append(0.0)
            basis.append("lowest possible")
        else:
            point.append(MARGIN * float(rows[name].max()) if len(rows) else float("nan"))
            basis.append(f"largest trained + {MARGIN - 1:.0%}")
    return Reference(objectives, tuple(point), tuple(basis))


def in_told_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows in the order told: appended so, a stable sort keeps it for a reordered frame."""
    return frame.sort_values("num_asked_at_tell", kind="stable")


def hypervolume_by_told(told: pd.DataFrame, reference: Reference) -> np.ndarray:
    """The hypervolume after each row of ``told``, a lineage frame ``in_told_order``: only
    trained rows with every objective measured count."""
    objectives = list(reference.objectives)
    trained = told["status"].eq(str(Status.TRAINED)).fillna(False).to_numpy(dtype=bool)
    costs = minimised(told, objectives)
    costs[~trained] = np.nan  # NaN is never below the reference: such rows add nothing
    corner = minimised(pd.DataFrame([reference.point], columns=objectives), objectives)[0]
    values = np.full(len(told), np.nan)
    front = np.empty((0, len(objectives)))
    for i in np.flatnonzero((costs < corner).all(axis=1)):
        if (front <= costs[i]).all(axis=1).any():
            continue  # dominated by the front so far, or equal to one on it
        front = np.vstack([front, costs[i]])
        front = front[front_2d(front) if len(objectives) == 2 else front_3d(front)]
        values[i] = volume(front, corner)
    return pd.Series(values, dtype="float64").ffill().fillna(0.0).to_numpy()


def hypervolume(frame: pd.DataFrame, reference: Reference) -> float:
    """The hypervolume of all the trained candidates of ``frame``."""
    values = hypervolume_by_told(frame, reference)
    return float(values[-1]) if len(values) else 0.0


def run_reference(run_dir: str | Path, frame: pd.DataFrame) -> Reference:
    """The reference of the run in ``run_dir`` (``config_reference``)."""
    from tvnsearch.search.runs import load_run

    return config_reference(load_run(run_dir), frame)


def config_reference(config: RunConfig, frame: pd.DataFrame) -> Reference:
    """The reference of a run: its strategy's objectives when it names 2 or 3 that a front can
    be drawn over (else ``default_objectives``), and its constraints as limits."""
    names = [str(pair[0]) for pair in config.search.options.get("objectives", ())]
    limits = limits_of(config.constraints)
    try:
        return reference_for(frame, names, limits)
    except InputError:  # e.g. TPE's fitness alone: no front to measure over
        return reference_for(frame, None, limits)


def hypervolume_summary(run_dir: str | Path) -> dict[str, Any]:
    """What ``tvnsearch status`` says of a run's front: the reference, the hypervolume now, at
    ``MILESTONES`` of the candidates told, and each (told, hypervolume) where it grew."""
    from tvnsearch.search.lineage import read_lineage

    frame = read_lineage(run_dir)
    reference = run_reference(run_dir, frame)
    values = hypervolume_by_told(in_told_order(frame), reference)
    grew = np.flatnonzero(np.diff(np.r_[0.0, values]) > 0)
    milestones = {f"{s:.0%}": int(s * len(values)) for s in MILESTONES}
    names = reference.objectives
    return {
        "objectives": {n: OBJECTIVES[n] for n in names},
        "reference": {n: _plain(v) for n, v in zip(names, reference.point, strict=True)},
        "reference_basis": dict(zip(names, reference.basis, strict=True)),
        "value": float(values[-1]) if len(values) else 0.0,
        "at": {share: float(values[n - 1]) for share, n in milestones.items() if n},
        "grew": [[int(i) + 1, float(values[i])] for i in grew],  # (candidates told, value)
    }


def describe_reference(reference: Reference) -> str:
    """E.g. "fitness x cpu_ms, from fitness 0 (lowest possible), cpu_ms 4 (max_cpu_ms)"."""
    corner = ", ".join(
        f"{n} {'-' if np.isnan(v) else format(v, 'g')} ({why})"
        for n, v, why in zip(reference.objectives, reference.point, reference.basis, strict=True)
    )
    return f"{' x '.join(reference.objectives)}, from {corner}"


def describe_hypervolume(summary: dict[str, Any]) -> str:
    """The status lines of ``hypervolume_summary``."""
    names = tuple(summary["objectives"])
    point = tuple(np.nan if v is None else v for v in summary["reference"].values())
    reference = Reference(names, point, tuple(summary["reference_basis"].values()))
    lines = [f"  front    hypervolume {summary['value']:.4g} over {describe_reference(reference)}"]
    if summary["at"]:
        so_far = ", ".join(f"{v:.4g} after {share}" for share, v in summary["at"].items())
        lines.append(f"           {so_far} of the candidates told")
    return "\n".join(lines)


def _plain(value: float) -> float | None:
    return None if np.isnan(value) else value
