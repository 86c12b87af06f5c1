"""Tournament evolution as in the TVN paper, steady-state and asynchronous, optionally aging.

Until ``initial_size`` candidates with a fitness have been told, ``ask`` samples random genomes
(the paper: 200), however many are in flight. From then on each new candidate comes from a
tournament: ``tournament_size`` members of the population drawn uniformly (the paper: 50), the
fittest is the parent (the lowest candidate id among equals), and one mutation of it is the child.
Every candidate told with a fitness joins the population at once: there are no generations, so
workers never wait for each other.

The population is unbounded by default, as in the paper. With ``population_size`` it is capped:
when a member joins a full population the worst leaves, or with ``aging`` (regularized evolution,
Real et al. 2019) the oldest, which keeps the search from resting on a few lucky evaluations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tvnsearch.genome.genes import Genome
from tvnsearch.genome.mutation import Mutation, mutate
from tvnsearch.genome.space import SearchSpace
from tvnsearch.search.strategies import Candidate, Result, Strategy


@dataclass(frozen=True)
class Member:
    candidate: Candidate
    fitness: float


class Evolution(Strategy):
    name = "evolution"

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
    def population(self) -> tuple[Member, ...]:
        """The current members, oldest first."""
        return tuple(self._population)

    def _new(self, candidate_id: int) -> Candidate:
        rng = self._rng(candidate_id)
        if self._num_joined < self.initial_size:
            return Candidate(candidate_id, self._sample(rng), None, "random", self.name)
        size = min(self.tournament_size, len(self._population))
        contestants = rng.sample(self._population, size)
        parent = max(contestants, key=lambda m: (m.fitness, -m.candidate.candidate_id))
        mutation = self._first_mutation(parent.candidate.genome, rng)
        return Candidate(
            candidate_id,
            mutation.child,
            parent.candidate.candidate_id,
            mutation.description,
            self.name,
        )

    def _learn(self, candidate: Candidate, result: Result) -> None:
        if result.fitness is None:  # rejected, failed, or a duplicate of a rejected genome
            return
        self._population.append(Member(candidate, result.fitness))
        self._num_joined += 1
        if self.population_size is not None and len(self._population) > self.population_size:
            self._population.pop(0 if self.aging else self._worst())

    def _worst(self) -> int:
        return min(range(len(self._population)), key=lambda i: self._population[i].fitness)

    def _first_mutation(self, parent: Genome, rng: random.Random) -> Mutation:
        """A mutation of ``parent`` whose child passes ``feasible``, if one does in
        ``MAX_DRAWS`` draws (else the last drawn)."""
        mutations: list[Mutation] = []

        def draw() -> Genome:
            mutations.append(mutate(parent, self.space, rng))
            return mutations[-1].child

        self._first_feasible(draw)
        return mutations[-1]
