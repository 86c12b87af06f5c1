from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tvnsearch.errors import InputError
from tvnsearch.inspect.hypervolume import (
    Reference,
    default_objectives,
    hypervolume,
    hypervolume_by_told,
    limits_of,
    reference_for,
    volume,
)
from tvnsearch.inspect.pareto import pareto_front
from tvnsearch.measure.constraints import Constraints


def lineage(rows: list[tuple[str, float | None, float | None]], **more: list) -> pd.DataFrame:
    """A lineage frame in the order told: (status, fitness, cpu_ms) per row."""
    status, fitness, cpu_ms = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "candidate_id": pd.array(range(len(rows)), dtype="Int64"),
            "num_asked_at_tell": pd.array(range(1, len(rows) + 1), dtype="Int64"),
            "status": pd.array(status, dtype="string"),
            "fitness": pd.array(fitness, dtype="Float64"),
            "cpu_ms": pd.array(cpu_ms, dtype="Float64"),
            **{name: pd.array(values, dtype="Float64") for name, values in more.items()},
        }
    )


# Fitness up, cpu_ms down. Boxes from (fitness 0, cpu_ms 6): (1, 3) covers 1 x 3, (2, 5) covers
# 2 x 1, and they share 1 x 1: 4 in all. The others add nothing.
ROWS = [
    ("rejected", None, 1.0),
    ("trained", 1.0, 3.0),
    ("failed", None, None),
    ("trained", 0.5, 4.0),  # dominated by (1, 3)
    ("trained", 2.0, 5.0),
    ("trained", 3.0, None),  # not measured: on no front
    ("trained", 2.5, 7.0),  # beyond the reference
]
REFERENCE = Reference(("fitness", "cpu_ms"), (0.0, 6.0), ("lowest possible", "max_cpu_ms"))


def test_a_staircase_in_two_objectives_by_hand() -> None:
    costs = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.0, 2.0], [3.0, 3.0], [5.0, 0.0]])
    # Columns of width 1 from x = 1, 2, 3 up to (4, 4): heights 1, 2, 3. (5, 0) is outside.
    assert volume(costs, np.array([4.0, 4.0])) == 6.0
    assert volume(costs[:0], np.array([4.0, 4.0])) == 0.0


def test_three_objectives_by_hand() -> None:
    corner = np.array([2.0, 2.0, 2.0])
    assert volume(np.array([[0.0, 0.0, 0.0]]), corner) == 8.0
    # Three boxes of 2 (2 x 1 x 1) that meet pairwise and all together in the unit cube
    # [1, 2]^3: 3 * 2 - 3 * 1 + 1.
    boxes = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    assert volume(boxes, corner) == 4.0
    assert volume(np.vstack([boxes, [1.5, 1.5, 1.5]]), corner) == 4.0  # dominated: nothing more


def test_three_objectives_agree_with_sampling() -> None:
    rng = np.random.default_rng(0)
    points, corner = rng.random((25, 3)), np.ones(3)
    samples = rng.random((200_000, 3))
    covered = np.zeros(len(samples), dtype=bool)
    for point in points:
        covered |= (samples >= point).all(axis=1)
    assert volume(points, corner) == pytest.approx(covered.mean(), abs=0.005)


def test_a_lineage_counts_trained_rows_in_their_directions() -> None:
    assert hypervolume(lineage(ROWS), REFERENCE) == 4.0


def test_hypervolume_over_time_grows_with_the_front() -> None:
    np.testing.assert_array_equal(
        hypervolume_by_told(lineage(ROWS), REFERENCE), [0, 3, 3, 3, 4, 4, 4]
    )


def test_three_objectives_over_a_lineage() -> None:
    frame = lineage(ROWS[:2] + ROWS[4:5], params=[None, 10.0, 30.0])
    reference = Reference(("fitness", "cpu_ms", "params"), (0.0, 6.0, 40.0), ("", "", ""))
    # (1, 3, 10) covers 1 x 3 x 30 = 90, (2, 5, 30) 2 x 1 x 10 = 20, together 1 x 1 x 10 = 10.
    assert hypervolume(frame, reference) == 100.0


def test_only_the_front_matters() -> None:
    rng = np.random.default_rng(1)
    fitness, cpu_ms = rng.random(200) * 2, rng.random(200) * 10
    frame = lineage([("trained", f, c) for f, c in zip(fitness, cpu_ms, strict=True)])
    reference = reference_for(frame)
    front = pareto_front(frame, reference.objectives)
    assert hypervolume(front, reference) == pytest.approx(hypervolume(frame, reference))
    # Strips of the front sorted by rising fitness: an independent sum of the same area.
    f, c = front.sort_values("fitness")[["fitness", "cpu_ms"]].to_numpy(dtype=float).T
    strips = np.diff(np.r_[0.0, f]) * (reference.point[1] - c)
    assert hypervolume(frame, reference) == pytest.approx(strips.sum())
    assert (np.diff(hypervolume_by_told(frame, reference)) >= 0).all()


def test_the_reference_is_the_constraint_else_zero_else_beyond_the_largest() -> None:
    frame = lineage(ROWS)
    assert reference_for(frame, limits={"cpu_ms": 6.0}) == REFERENCE
    free = reference_for(frame)
    assert free.point == (0.0, pytest.approx(1.1 * 7.0))
    assert free.basis == ("lowest possible", "largest trained + 10%")


def test_limits_name_the_columns_they_bound() -> None:
    limits = limits_of(Constraints(max_cpu_ms=4.0, max_params=100, min_frames_per_second=30.0))
    assert limits == {"cpu_ms": 4.0, "params": 100.0, "frames_per_second": 30.0}
    frame = lineage(ROWS, frames_per_second=[None, 40.0, None, 10.0, 60.0, None, None])
    objectives = ("fitness", "frames_per_second")
    reference = reference_for(frame, objectives, limits)
    assert reference.point == (0.0, 30.0) and reference.basis[1] == "min_frames_per_second"
    assert hypervolume(frame, reference) == 2.0 * 30  # (2, 60) dominates (1, 40)
    assert reference_for(frame, objectives).point == (0.0, 0.0)  # both maximised


def test_default_objectives_follow_what_was_measured() -> None:
    frame = lineage(ROWS, gpu_ms=[None] * 7, params=[None] * 7)
    assert default_objectives(frame) == ("fitness", "cpu_ms")
    no_cpu = frame.assign(cpu_ms=pd.array([None] * 7, dtype="Float64"))
    assert default_objectives(no_cpu.assign(gpu_ms=no_cpu["fitness"])) == ("fitness", "gpu_ms")
    assert default_objectives(no_cpu) == ("fitness", "params")
    assert default_objectives(no_cpu, {"gpu_ms": 5.0}) == ("fitness", "gpu_ms")  # constrained


def test_a_front_needs_known_objectives() -> None:
    with pytest.raises(InputError, match="must be one of"):
        reference_for(lineage(ROWS), ("fitness", "speed"))
