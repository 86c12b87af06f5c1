from __future__ import annotations

import dataclasses
import itertools
import random

import numpy as np
import pytest
from conftest import SPACES_DIR

from tvnsearch import load_space
from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Genome
from tvnsearch.measure.op_features import network_ops
from tvnsearch.measure.predictor import (
    NUM_FEATURES,
    LatencyPredictor,
    accuracy,
    features,
    fit,
    nnls,
)


def sample(num: int, seed: int) -> list[Genome]:
    rng = random.Random(seed)
    spaces = [load_space(SPACES_DIR / f"{n}.toml") for n in ("tiny", "tvn", "tvn_mobile")]
    return [spaces[i % 3].sample(rng) for i in range(num)]


def synthetic_ms(genome: Genome, coefficients: np.ndarray) -> float:
    return float(features(genome, 10) @ coefficients)


@pytest.fixture(scope="module")
def true_coefficients() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0.5, 2.0, NUM_FEATURES) * (rng.random(NUM_FEATURES) < 0.5)


def test_listed_ops_add_up_to_the_counted_flops() -> None:
    for g in sample(60, seed=3):
        assert sum(op.work for op in network_ops(g, 10) if "pool" not in op.family) == (
            count_cost(g, 10).flops
        )


def test_nnls_finds_the_best_non_negative_solution() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.normal(size=(12, 4)), rng.normal(size=12)
        c = nnls(a, b)
        assert (c >= 0).all()
        best = min(
            np.linalg.norm(a @ _restricted_lstsq(a, b, subset) - b)
            for r in range(5)
            for subset in itertools.combinations(range(4), r)
            if (_restricted_lstsq(a, b, subset) >= 0).all()
        )
        assert np.linalg.norm(a @ c - b) == pytest.approx(best, rel=1e-9, abs=1e-12)


def _restricted_lstsq(a: np.ndarray, b: np.ndarray, subset: tuple[int, ...]) -> np.ndarray:
    c = np.zeros(a.shape[1])
    if subset:
        c[list(subset)] = np.linalg.lstsq(a[:, list(subset)], b, rcond=None)[0]
    return c


def test_fit_recovers_a_runtime_that_is_linear_in_the_features(true_coefficients) -> None:
    train, test = sample(150, seed=4), sample(30, seed=5)
    x = np.array([features(g, 10) for g in train])
    coefficients = fit(x, x @ true_coefficients)
    predicted = [float(features(g, 10) @ coefficients) for g in test]
    measured = [synthetic_ms(g, true_coefficients) for g in test]
    assert accuracy(predicted, measured, tolerance=1e-6).within_tolerance == 1.0


def test_no_prediction_before_enough_measurements(true_coefficients) -> None:
    predictor = LatencyPredictor(min_fit_size=3)
    genomes = sample(4, seed=6)
    for g in genomes[:2]:
        predictor.learn(g, 10, synthetic_ms(g, true_coefficients), None)
        assert predictor.predict(genomes[3], 10) is None
    predictor.learn(genomes[2], 10, synthetic_ms(genomes[2], true_coefficients), None)
    assert predictor.predict(genomes[3], 10) > 0


def test_a_mutated_child_inherits_its_parents_error(true_coefficients) -> None:
    predictor = LatencyPredictor()
    for g in sample(80, seed=7):
        predictor.learn(g, 10, synthetic_ms(g, true_coefficients), None)
    parent = sample(1, seed=8)[0]
    # Something the features miss makes this network 40% slower than modelled.
    predictor.learn(parent, 10, 1.4 * synthetic_ms(parent, true_coefficients), None)
    last = parent.blocks[-1]
    child = dataclasses.replace(
        parent, blocks=(*parent.blocks[:-1], dataclasses.replace(last, skip=not last.skip))
    )
    stranger = sample(1, seed=9)[0]
    ratio_child = predictor.predict(child, 10) / synthetic_ms(child, true_coefficients)
    ratio_stranger = predictor.predict(stranger, 10) / synthetic_ms(stranger, true_coefficients)
    assert ratio_child == pytest.approx(1.4, rel=0.1)
    assert ratio_stranger == pytest.approx(1.0, rel=0.1)


def test_accuracy_counts_predictions_within_the_tolerance() -> None:
    a = accuracy([1.05, 0.8, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0])
    assert a.num_samples == 4 and a.within_tolerance == 0.5 and a.tolerance == 0.1
    assert a.median_error == pytest.approx(0.125) and a.worst_ratio == 2.0
