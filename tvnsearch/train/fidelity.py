"""Multi-fidelity training: asynchronous successive halving (ASHA) inside the steady-state search.

A candidate trains in rungs: its iterations are cut at ``Rungs.iterations`` (each
``reduction_factor`` times the one before, the last the recipe's ``train.iterations``). At the end
of every rung but the last it is scored, and it goes on only if its fitness there reaches that
rung's cut: the ``1 - 1/reduction_factor`` quantile of the fitnesses the candidates told before it
had at the same rung. So about one candidate in ``reduction_factor`` reaches each next rung, and
most of the compute goes to the promising ones. This is the stopping rule of ASHA (Li et al.
2020) as Ray Tune's ``ASHAScheduler`` implements it. Why ASHA and not a learning-curve model: it
needs no model to fit or trust, no candidate waits for others to be promoted (which would idle
workers in a steady-state search), and its one setting, the reduction factor, has a clear meaning.

Why in the worker, with the cuts fixed when the candidate is submitted: one task and one lineage
row per candidate, and a resume needs nothing but the lineage (each row keeps the fitness at every
rung it reached: ``rungs_to_json``). The price is staleness: rungs reached by candidates still
training when another is submitted do not count toward its cuts; with a few workers per hundred
candidates this moves the cuts little, and with one worker not at all.

Training follows one learning-rate schedule over the full ``train.iterations``, so a candidate
that goes on continues where it stopped, and every fitness at one rung comes from the same point
of that schedule. Tournaments compare like with like: first how far a candidate trained, then its
fitness there (``rank_key``). Pure: no torch, so strategies and the driver import it freely.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

RungFitness = tuple[tuple[int, float], ...]  # (iterations, fitness) at each rung reached
Cuts = tuple[float | None, ...]  # per rung but the last: the fitness needed to go on; None: any


@dataclass(frozen=True)
class Rungs:
    """Where training may stop: increasing iterations, the last the full budget."""

    iterations: tuple[int, ...]
    reduction_factor: float = 3.0  # about 1 in this many goes on at each rung

    def __post_init__(self) -> None:
        its = self.iterations
        if not its or its[0] < 1 or any(b <= a for a, b in itertools.pairwise(its)):
            raise ValueError(f"rung iterations must increase from >= 1, but got {its}")
        if self.reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1, but got {self.reduction_factor}")


def rungs_of(iterations: int, num_rungs: int, reduction_factor: float = 3.0) -> Rungs:
    """Up to ``num_rungs`` rungs ending at ``iterations``, each ``reduction_factor`` times the
    previous (rounded; rungs that round to the same iteration are one). One rung: plain training."""
    if num_rungs < 1:
        raise ValueError(f"num_rungs must be >= 1, but got {num_rungs}")
    cuts = {max(1, round(iterations / reduction_factor**k)) for k in range(num_rungs)}
    return Rungs(tuple(sorted(cuts)), reduction_factor)


def goes_on(fitness: float, cut: float | None) -> bool:
    """Whether a candidate scored ``fitness`` at a rung whose cut is ``cut`` trains further."""
    return cut is None or fitness >= cut


def stop_rung(fitness_at: RungFitness, cuts: Cuts) -> int | None:
    """The rung (index) where training with ``cuts`` stops, read off a curve ``fitness_at`` that
    reached at least that far (the same seed trains the same curve whatever the cuts); None when
    the curve ends before the cuts decide."""
    for rung, (_, fitness) in enumerate(fitness_at):
        if rung >= len(cuts) or not goes_on(fitness, cuts[rung]):
            return rung
    return None


@dataclass
class RungHistory:
    """The fitness every told candidate had at each rung: what the next cuts are drawn from."""

    rungs: Rungs
    seen: list[list[float]] = field(init=False)

    def __post_init__(self) -> None:
        self.seen = [[] for _ in self.rungs.iterations]

    def record(self, fitness_at: RungFitness) -> None:
        for iterations, fitness in fitness_at:
            if iterations in self.rungs.iterations:
                self.seen[self.rungs.iterations.index(iterations)].append(fitness)

    def cuts(self) -> Cuts:
        """For each rung but the last, the fitness a candidate needs there to go on; None while
        no candidate has been told at that rung (it goes on)."""
        q = 1 - 1 / self.rungs.reduction_factor
        return tuple(_quantile(s, q) for s in self.seen[:-1])


def history_of(rungs: Rungs, rows: Iterable[str | None]) -> RungHistory:
    """The history a resumed search starts from: the lineage's ``rungs`` column of its trained
    rows, in the order told."""
    history = RungHistory(rungs)
    for text in rows:
        if text:
            history.record(rungs_from_json(text))
    return history


def rank_key(iterations: int | None, fitness: float) -> tuple[int, float]:
    """Tournament order: how long a candidate trained first (the rung it reached), then its
    fitness there. A candidate that was stopped lost to the cut of the rung it stopped at, and
    fitnesses are compared only between candidates trained as long."""
    return (iterations or 0, fitness)


def rungs_to_json(fitness_at: RungFitness) -> str:
    return json.dumps([[i, f] for i, f in fitness_at])


def rungs_from_json(text: str) -> RungFitness:
    return tuple((int(i), float(f)) for i, f in json.loads(text))


def _quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile with linear interpolation (numpy's default), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
