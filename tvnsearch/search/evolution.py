"""Tournament evolution as in the TVN paper, steady-state and asynchronous, optionally aging.

Until ``initial_size`` candidates have been trained, ``ask`` samples random genomes
(the paper: 200), however many are in flight. From then on each new candidate comes from a
tournament: ``tournament_size`` members of the population drawn uniformly (the paper: 50), the
fittest is the parent, and one mutation of it, a network the parent is not, is the child. Every
candidate trained joins the population at once: there are no generations, so workers never wait
for each other. A duplicate does not join (see ``tvnsearch.search.strategies``).

With multi-fidelity training (``tvnsearch.train.fidelity``) candidates stopped at a rung join
too, and tournaments compare like with like: a candidate trained further beats one stopped
sooner (which lost to that rung's cut), and fitnesses are compared between candidates trained as
long. Every candidate trained counts toward ``initial_size``, stopped early or not.

Fitnesses within noise are ties. The fittest contestant ties with every other whose fitness is
below its own by no more than the larger ``fitness_noise`` of the two; among the tied, the
network that computes least (counted FLOPs of its blocks) wins, for it reaches the same accuracy
for less, then the oldest. Where neither noise is known the comparison is strict: the fittest,
the oldest among equals. No random choice is made, and the lineage keeps every noise, so
replay repeats every tournament.

The population is unbounded by default, as in the paper. With ``population_size`` it is capped:
when a member joins a full population the worst leaves, or with ``aging`` (regularized evolution,
Real et al. 2019) the oldest, which keeps the search from resting on a few lucky evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Genome
from tvnsearch.genome.space import SearchSpace
from tvnsearch.search.strategies import Candidate, Result, Strategy
from tvnsearch.status import Status
from tvnsearch.train.fidelity import rank_key


@dataclass(frozen=True)
class Member:
    candidate: Candidate
    fitness: float
    fitness_noise: float | None = None  # the standard error of ``fitness``; None: not known
    iterations: int | None = None  # trained for (a rung, with multi-fidelity); None: unknown

    @property
    def rank(self) -> tuple[int, float]:
        return rank_key(self.iterations, self.fitness)


class Evolution(Strategy):
    name = "evolution"
    multi_fidelity = True

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        initial_size: int = 200,
        tournament_size: int = 50,
        population_size: int | None = None,
        aging: bool = False,
    ) -> None:
        if initial_size < 1 or tournament_size < 1:
            raise ValueError(f"sizes must be >= 1, but got {initial_size=}, {tournament_size=}")
        if population_size is not None and population_size < 1:
            raise ValueError(f"population_size must be >= 1, but got {population_size=}")
        if aging and population_size is None:
            raise ValueError("aging removes the oldest from a full population: set population_size")
        super().__init__(space, seed=seed)
        self.initial_size = initial_size
        self.tournament_size = tournament_size
        self.population_size = population_size
        self.aging = aging
        self._population: list[Member] = []  # oldest first
        self._num_joined = 0

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("iterations",)

    @property
    def population(self) -> tuple[Member, ...]:
        """The current members, oldest first."""
        return tuple(self._population)

    def _new(self, candidate_id: int) -> Candidate:
        rng = self._rng(candidate_id)
        if self._num_joined < self.initial_size:
            return Candidate(candidate_id, self._sample(rng), None, "random", self.name)
        size = min(self.tournament_size, len(self._population))
        parent = winner(rng.sample(self._population, size))
        mutation = self._first_mutation(parent.candidate.genome, rng)
        return Candidate(
            candidate_id,
            mutation.child,
            parent.candidate.candidate_id,
            mutation.description,
            self.name,
        )

    def _learn(self, candidate: Candidate, result: Result) -> None:
        # Rejected, failed, or a duplicate: the network is a member already, or was one.
        if result.status != Status.TRAINED or result.fitness is None:
            return
        iterations = result.metrics.get("iterations")
        member = Member(
            candidate,
            result.fitness,
            result.fitness_noise,
            None if iterations is None else int(iterations),
        )
        self._population.append(member)
        self._num_joined += 1
        if self.population_size is not None and len(self._population) > self.population_size:
            self._population.pop(0 if self.aging else self._worst())

    def _worst(self) -> int:
        return min(range(len(self._population)), key=lambda i: self._population[i].rank)


def winner(contestants: Sequence[Member]) -> Member:
    """The tournament's parent: the fittest of those trained longest, or of those tied with it
    within noise the one whose blocks compute least, then the oldest."""
    fittest = max(contestants, key=lambda m: (*m.rank, -m.candidate.candidate_id))
    tied = [m for m in contestants if m is fittest or _tied(fittest, m)]
    if len(tied) == 1:
        return fittest
    return min(tied, key=lambda m: (_block_flops(m.candidate.genome), m.candidate.candidate_id))


def _tied(fittest: Member, other: Member) -> bool:
    noises = [n for n in (fittest.fitness_noise, other.fitness_noise) if n is not None]
    return (
        bool(noises)
        and fittest.iterations == other.iterations
        and fittest.fitness - other.fitness <= max(noises)
    )


def _block_flops(genome: Genome) -> int:
    # The head's FLOPs depend on the dataset's classes, which are the same for every contestant.
    return sum(count_cost(genome, num_classes=1).block_flops)
