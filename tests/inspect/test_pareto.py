from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvnsearch.errors import InputError
from tvnsearch.inspect.pareto import OBJECTIVES, front_2d, front_3d, minimised, pareto_front

STATUSES = ("trained", "trained", "trained", "rejected", "failed", "duplicate")


def lineage(rows: list[dict]) -> pd.DataFrame:
    """A lineage-like frame with the nullable dtypes ``read_lineage`` gives."""
    columns = {
        "candidate_id": ("Int64", [i for i in range(len(rows))]),
        "status": ("string", [r.get("status", "trained") for r in rows]),
        "fitness": ("Float64", [r.get("fitness") for r in rows]),
        "top1": ("Float64", [r.get("top1") for r in rows]),
        "cpu_ms": ("Float64", [r.get("cpu_ms") for r in rows]),
        "params": ("Int64", [r.get("params") for r in rows]),
    }
    return pd.DataFrame({k: pd.array(v, dtype=t) for k, (t, v) in columns.items()})


def brute_force(frame: pd.DataFrame, objectives: tuple[str, ...]) -> set[int]:
    """The front by its definition: every pair compared, O(n^2)."""
    signs = [-1 if OBJECTIVES[n] == "maximise" else 1 for n in objectives]
    points = {
        int(row["candidate_id"]): [
            s * float(row[n]) for s, n in zip(signs, objectives, strict=True)
        ]
        for _, row in frame.iterrows()
        if row["status"] == "trained" and all(not pd.isna(row[n]) for n in objectives)
    }

    def dominates(p: list[float], q: list[float]) -> bool:
        return all(a <= b for a, b in zip(p, q, strict=True)) and any(
            a < b for a, b in zip(p, q, strict=True)
        )

    return {i for i, q in points.items() if not any(dominates(p, q) for p in points.values())}


def dominance_mask(costs: np.ndarray) -> np.ndarray:
    """Non-dominated rows of an array by all pairs at once (numpy, O(n^2) memory)."""
    no_worse = (costs[None, :, :] <= costs[:, None, :]).all(axis=2)
    better = (costs[None, :, :] < costs[:, None, :]).any(axis=2)
    return ~(no_worse & better).any(axis=1)


row_strategy = st.fixed_dictionaries(
    {
        "status": st.sampled_from(STATUSES),
        "fitness": st.sampled_from([None, 0.5, 1.0, 1.0, 1.5]),
        "top1": st.sampled_from([0.0, 0.25, 0.5]),
        "cpu_ms": st.sampled_from([None, 1.0, 2.0, 2.0, 3.0]),
        "params": st.integers(1, 4),
    }
)
OBJECTIVE_SETS = [
    ("fitness", "cpu_ms"),
    ("cpu_ms", "fitness"),
    ("cpu_ms", "params"),
    ("fitness", "top1"),
    ("fitness", "cpu_ms", "params"),
    ("params", "top1", "cpu_ms"),
    ("fitness", "top1", "params"),
]


@pytest.mark.parametrize("objectives", OBJECTIVE_SETS)
@settings(max_examples=150, deadline=None)
@given(rows=st.lists(row_strategy, max_size=40))
def test_front_matches_brute_force_with_many_ties(
    objectives: tuple[str, ...], rows: list[dict]
) -> None:
    frame = lineage(rows)
    front = pareto_front(frame, objectives)
    assert set(front["candidate_id"].tolist()) == brute_force(frame, objectives)
    assert len(front) == front["candidate_id"].nunique()


@pytest.mark.parametrize("num_objectives", [2, 3])
@pytest.mark.parametrize("levels", [None, 4, 30])
def test_sweeps_match_all_pairs_on_larger_random_data(num_objectives: int, levels: int) -> None:
    rng = np.random.default_rng(num_objectives * 100 + (levels or 0))
    costs = rng.random((1500, num_objectives))
    if levels:  # values on a grid: many rows equal in some or all objectives
        costs = np.round(costs * levels)
    sweep = front_2d if num_objectives == 2 else front_3d
    np.testing.assert_array_equal(sweep(costs), dominance_mask(costs))


def test_directions_maximise_fitness_and_minimise_runtime() -> None:
    frame = lineage(
        [
            {"fitness": 1.0, "cpu_ms": 1.0},  # fast
            {"fitness": 1.5, "cpu_ms": 2.0},  # fit
            {"fitness": 0.9, "cpu_ms": 1.5},  # slower and less fit than 0
            {"fitness": 1.5, "cpu_ms": 0.5, "status": "rejected"},  # best, but rejected
            {"fitness": 2.0, "cpu_ms": None},  # no runtime: cannot be placed
        ]
    )
    front = pareto_front(frame, ("fitness", "cpu_ms"))
    assert front["candidate_id"].tolist() == [1, 0]  # best first by fitness


def test_identical_rows_are_all_kept_and_a_tie_in_one_objective_is_dominated() -> None:
    frame = lineage(
        [
            {"fitness": 1.0, "cpu_ms": 1.0},
            {"fitness": 1.0, "cpu_ms": 1.0},  # identical to 0: kept with it
            {"fitness": 1.0, "cpu_ms": 1.2},  # as fit as 0, slower: dominated
            {"fitness": 0.8, "cpu_ms": 1.0},  # as fast as 0, less fit: dominated
        ]
    )
    assert pareto_front(frame)["candidate_id"].tolist() == [0, 1]
    frame["params"] = pd.array([5, 5, 5, 5], dtype="Int64")
    three = pareto_front(frame, ("fitness", "cpu_ms", "params"))
    assert three["candidate_id"].tolist() == [0, 1]


def test_front_is_sorted_by_the_first_objective_then_the_next() -> None:
    frame = lineage(
        [
            {"fitness": 1.0, "cpu_ms": 2.0, "params": 10},
            {"fitness": 1.2, "cpu_ms": 3.0, "params": 20},
            {"fitness": 0.5, "cpu_ms": 1.0, "params": 30},
            {"fitness": 1.0, "cpu_ms": 2.5, "params": 5},
        ]
    )
    assert pareto_front(frame, ("cpu_ms", "fitness"))["candidate_id"].tolist() == [2, 0, 1]
    three = pareto_front(frame, ("fitness", "cpu_ms", "params"))
    assert three["candidate_id"].tolist() == [1, 0, 3, 2]
    assert three.index.tolist() == [0, 1, 2, 3]


def test_no_trained_row_gives_an_empty_front_with_the_columns() -> None:
    frame = lineage([{"status": "rejected", "fitness": None, "cpu_ms": 5.0}])
    front = pareto_front(frame)
    assert front.empty and list(front.columns) == list(frame.columns)


@pytest.mark.parametrize(
    ("objectives", "expected"),
    [
        (("fitness", "latency"), "objectives[1]: must be one of"),
        (("fitness",), "objectives: must be 2 or 3, but got 1"),
        (("fitness", "cpu_ms", "params", "flops"), "must be 2 or 3, but got 4"),
        (("fitness", "fitness"), "objectives[1]: 'fitness' is already an objective"),
        (("fitness", "frame_ms"), "frame_ms: is not a column of this lineage"),
    ],
)
def test_bad_objectives_name_the_field(objectives: tuple[str, ...], expected: str) -> None:
    with pytest.raises(InputError) as raised:
        pareto_front(lineage([{"fitness": 1.0, "cpu_ms": 1.0}]), objectives)
    assert expected in str(raised.value)
    if "must be one of" in expected:
        assert all(name in str(raised.value) for name in OBJECTIVES)


def test_minimised_negates_what_is_maximised() -> None:
    frame = lineage([{"fitness": 1.5, "cpu_ms": 2.0, "params": 7}])
    costs = minimised(frame, ("fitness", "cpu_ms", "params"))
    np.testing.assert_array_equal(costs, [[-1.5, 2.0, 7.0]])


@pytest.mark.parametrize("objectives", [("fitness", "cpu_ms"), ("fitness", "cpu_ms", "params")])
def test_a_lineage_of_100_000_rows_takes_well_under_seconds(objectives: tuple[str, ...]) -> None:
    rng = np.random.default_rng(0)
    n = 100_000
    frame = pd.DataFrame(
        {
            "candidate_id": pd.array(np.arange(n), dtype="Int64"),
            "status": pd.array(rng.choice(["trained", "rejected"], n), dtype="string"),
            "fitness": pd.array(np.round(rng.random(n) * 90) / 45, dtype="Float64"),
            "cpu_ms": pd.array(rng.lognormal(1, 1, n), dtype="Float64"),
            "params": pd.array(rng.integers(1_000, 10_000_000, n), dtype="Int64"),
        }
    )
    start = time.perf_counter()
    front = pareto_front(frame, objectives)
    # An O(n^2) method takes minutes here; the sweeps take about 0.1 s.
    assert time.perf_counter() - start < 5.0
    assert 0 < len(front) < 1000
