from __future__ import annotations

import random

import numpy as np
import pytest

from tvnsearch.train.fidelity import (
    RungHistory,
    Rungs,
    history_of,
    rank_key,
    rungs_from_json,
    rungs_of,
    rungs_to_json,
    stop_rung,
)


@pytest.mark.parametrize(
    ("iterations", "num_rungs", "factor", "expected"),
    [
        (150, 1, 3.0, (150,)),
        (150, 3, 3.0, (17, 50, 150)),
        (1000, 4, 2.0, (125, 250, 500, 1000)),
        (3, 4, 3.0, (1, 3)),  # rungs that round to the same iteration are one
    ],
)
def test_rungs_grow_by_the_factor_and_end_at_the_full_budget(
    iterations, num_rungs, factor, expected
):
    assert rungs_of(iterations, num_rungs, factor).iterations == expected


def test_bad_rungs_are_refused() -> None:
    with pytest.raises(ValueError, match="increase"):
        Rungs((10, 10))
    with pytest.raises(ValueError, match="reduction_factor"):
        Rungs((10, 30), reduction_factor=1.0)


def test_cuts_are_the_top_one_in_factor_of_what_each_rung_has_seen() -> None:
    history = RungHistory(Rungs((10, 30, 90), reduction_factor=3.0))
    assert history.cuts() == (None, None)  # nothing seen: everyone goes on
    rng = random.Random(0)
    at_first = [rng.random() for _ in range(30)]
    for i, f in enumerate(at_first):
        reached = ((10, f), (30, f + 1)) if i % 3 == 0 else ((10, f),)
        history.record(reached)
    first, second = history.cuts()
    assert first == pytest.approx(np.quantile(at_first, 2 / 3))
    assert second == pytest.approx(np.quantile([f + 1 for f in at_first[::3]], 2 / 3))
    assert sum(f >= first for f in at_first) == 10  # one in three goes on


def test_the_history_is_rebuilt_from_the_lineage_column() -> None:
    rungs = Rungs((10, 30, 90))
    told = [((10, 0.5),), ((10, 0.9), (30, 1.1), (90, 1.4)), ()]
    texts = [rungs_to_json(t) if t else None for t in told]
    assert [rungs_from_json(t) for t in texts if t] == [t for t in told if t]
    rebuilt = history_of(rungs, texts)
    assert rebuilt.seen == [[0.5, 0.9], [1.1], [1.4]]


def test_a_candidate_trained_longer_ranks_first_then_fitness() -> None:
    ranked = sorted(
        [(10, 1.9), (90, 0.2), (30, 1.0), (90, 0.8), (None, 0.5)], key=lambda x: rank_key(*x)
    )
    assert ranked == [(None, 0.5), (10, 1.9), (30, 1.0), (90, 0.2), (90, 0.8)]


def test_the_stop_is_read_off_a_curve_as_far_as_it_goes() -> None:
    curve = ((10, 0.5), (30, 0.9), (90, 1.2))
    assert stop_rung(curve, ()) == 0  # no cuts: plain training, one rung
    assert stop_rung(curve, (None, None)) == 2  # everyone goes on
    assert stop_rung(curve, (0.6, None)) == 0  # below the first cut
    assert stop_rung(curve, (0.4, 1.0)) == 1
    assert stop_rung(curve[:1], (0.4, 1.0)) is None  # stopped sooner: cannot tell
