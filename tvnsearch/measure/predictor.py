"""A latency predictor fitted on the runtimes measured so far, to skip obvious violators.

Runtime is modelled as a sum over op families (``tvnsearch.measure.op_features``) of FLOPs over a
throughput, bytes over a bandwidth and calls times an overhead, plus a constant: linear in the
features, so a least-squares fit (numpy only) finds the coefficients. The fit minimises the
relative error, since a budget is relative, and keeps every coefficient non-negative, since no op
makes a network faster; that also keeps predictions for unseen shapes from going wild.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np

from tvnsearch.genome.genes import Genome
from tvnsearch.measure.op_features import FAMILIES, Op, network_ops

# glibc serves allocations above 32 MiB (its largest mmap threshold) with new pages every time,
# and touching new pages costs about ten times more per byte than reusing freed heap memory.
FRESH_PAGES_ABOVE = 32 * 2**20
NUM_FEATURES = 3 * len(FAMILIES) + 2
TOLERANCE = 0.10  # "within 10%", the accuracy that nn-Meter reports its predictors by
MIN_CHECKED = 5  # predictions checked against measurements before any candidate is skipped


@dataclass(frozen=True)
class Accuracy:
    """How close predictions came to measurements: the share within ``tolerance``, and the
    largest over-prediction, which bounds how wrong a rejection by ``predicted > margin * budget``
    could have been on these samples."""

    num_samples: int
    within_tolerance: float  # share of samples with |predicted / measured - 1| <= tolerance
    median_error: float  # median of |predicted / measured - 1|
    worst_ratio: float  # max of predicted / measured
    tolerance: float = TOLERANCE


def accuracy(
    predicted: list[float], measured: list[float], tolerance: float = TOLERANCE
) -> Accuracy:
    ratios = [p / m for p, m in zip(predicted, measured, strict=True)]
    if not ratios:
        return Accuracy(0, math.nan, math.nan, math.nan, tolerance)
    errors = [abs(r - 1) for r in ratios]
    within = sum(e <= tolerance for e in errors) / len(errors)
    return Accuracy(len(errors), within, statistics.median(errors), max(ratios), tolerance)


def features(genome: Genome, num_classes: int) -> np.ndarray:
    """Work (G), bytes (MB) and calls per op family; MB of fresh pages; a constant 1."""
    return _features(Counter(network_ops(genome, num_classes)))


def _features(ops: Counter[Op]) -> np.ndarray:
    x = sum((count * _op_features(op) for op, count in ops.items()), np.zeros(NUM_FEATURES))
    x[-1] = 1.0
    return x


@lru_cache(maxsize=2**16)
def _op_features(op: Op) -> np.ndarray:
    x = np.zeros(NUM_FEATURES)
    i = 3 * FAMILIES.index(op.family)
    x[i : i + 3] = (op.work / 1e9, op.bytes / 1e6, 1.0)
    x[-2] = op.output / 1e6 if op.output > FRESH_PAGES_ABOVE else 0.0
    return x


class Predictor(Protocol):
    """What the gate asks of a latency predictor (``LatencyPredictor``, ``LookupPredictor``)."""

    def predict(self, genome: Genome, num_classes: int) -> float | None: ...

    def learn(
        self, genome: Genome, num_classes: int, measured_ms: float, predicted_ms: float | None
    ) -> None: ...

    def skip_margin(self, margin: float) -> float | None: ...

    def accuracy(self) -> Accuracy: ...


class CheckedPredictions:
    """What every predictor keeps beside its model: the genomes learned (each once, since a
    cached profile seen again is no new evidence) and its predictions checked against the
    measurements that followed, which give its accuracy and its conservative skip margin."""

    def __init__(self) -> None:
        self._learned: set[tuple[str, int]] = set()
        self._checked: list[tuple[float, float]] = []  # (predicted before measuring, measured)

    def _first_sight(
        self, genome: Genome, num_classes: int, measured_ms: float, predicted_ms: float | None
    ) -> bool:
        """Record the check; False when this genome was learned before."""
        if (genome.id, num_classes) in self._learned:
            return False
        self._learned.add((genome.id, num_classes))
        if predicted_ms is not None:
            self._checked.append((predicted_ms, measured_ms))
        return True

    def skip_margin(self, margin: float) -> float | None:
        """How far over a budget a prediction must be to skip the measurement: ``margin``, or the
        largest over-prediction seen so far if larger; None until ``MIN_CHECKED`` predictions
        have been checked against measurements."""
        return skip_margin(self.accuracy(), margin)

    def accuracy(self) -> Accuracy:
        """Accuracy on candidates predicted before they were measured: never seen in a fit."""
        return accuracy([p for p, _ in self._checked], [m for _, m in self._checked])


class LatencyPredictor(CheckedPredictions):
    """Learns from each measurement; predicts once it has seen ``min_fit_size`` of them.

    A prediction is the fitted model's, corrected by the error the model made on the most
    similar network measured so far, in proportion to the share of predicted time the two
    have in common (identical ops): a mutated child inherits most of its parent's error.
    """

    def __init__(self, min_fit_size: int = 20) -> None:
        super().__init__()
        self.min_fit_size = min_fit_size
        self.coefficients: np.ndarray | None = None
        self._ops: list[Counter[Op]] = []
        self._x: list[np.ndarray] = []
        self._y: list[float] = []

    @property
    def num_samples(self) -> int:
        return len(self._y)

    def predict(self, genome: Genome, num_classes: int) -> float | None:
        if self.coefficients is None:
            return None
        ops = Counter(network_ops(genome, num_classes))
        modelled = float(_features(ops) @ self.coefficients)
        share, ratio = self._nearest(ops, modelled)
        return modelled * ratio**share

    def _nearest(self, ops: Counter[Op], modelled: float) -> tuple[float, float]:
        """(share of modelled time in common, measured / modelled) of the closest sample."""
        assert self.coefficients is not None
        best_share, best_index = 0.0, -1
        for i, sample in enumerate(self._ops):
            common = sum(
                min(n, sample[op]) * self._op_ms(op) for op, n in ops.items() if op in sample
            )
            if common / modelled > best_share:
                best_share, best_index = common / modelled, i
        if best_index < 0:
            return 0.0, 1.0
        sample_modelled = float(self._x[best_index] @ self.coefficients)
        return min(best_share, 1.0), self._y[best_index] / sample_modelled

    def _op_ms(self, op: Op) -> float:
        assert self.coefficients is not None
        return float(_op_features(op) @ self.coefficients)

    def learn(
        self, genome: Genome, num_classes: int, measured_ms: float, predicted_ms: float | None
    ) -> None:
        """Add one measurement (and the prediction made before it, to track accuracy); refit."""
        if not self._first_sight(genome, num_classes, measured_ms, predicted_ms):
            return
        self._ops.append(Counter(network_ops(genome, num_classes)))
        self._x.append(_features(self._ops[-1]))
        self._y.append(measured_ms)
        if self.num_samples >= self.min_fit_size:
            self.coefficients = fit(np.array(self._x), np.array(self._y))


def skip_margin(checked: Accuracy, margin: float) -> float | None:
    """``margin``, or the worst over-prediction in ``checked`` if larger; None until
    ``MIN_CHECKED`` predictions have been checked."""
    if checked.num_samples < MIN_CHECKED:
        return None
    return max(margin, checked.worst_ratio)


def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the squared relative error ``(x @ c - y) / y``."""
    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)  # columns of unit size: well conditioned
    a = x / scale / y[:, None]
    coefficients = nnls(a, np.ones(len(y)))
    return coefficients / scale


def nnls(a: np.ndarray, b: np.ndarray, *, max_iterations: int = 500) -> np.ndarray:
    """Lawson and Hanson's active-set method: argmin ||a @ c - b|| subject to c >= 0."""
    n = a.shape[1]
    c, active = np.zeros(n), np.zeros(n, dtype=bool)
    for _ in range(max_iterations):
        gradient = a.T @ (b - a @ c)
        if active.all() or gradient[~active].max(initial=0) <= 1e-10:
            break
        active[np.argmax(np.where(active, -np.inf, gradient))] = True
        while True:
            z = np.zeros(n)
            z[active] = np.linalg.lstsq(a[:, active], b, rcond=None)[0]
            if (z[active] > 0).all():
                c = z
                break
            negative = active & (z <= 0)
            step = np.min(c[negative] / (c[negative] - z[negative]))
            c = c + step * (z - c)
            active &= c > 1e-12
    return c
