"""Ask/tell search strategies: the protocol, the bookkeeping they share, random search, a registry.

A strategy proposes candidates (``ask``) and learns from their results (``tell``). It does no I/O
and draws every random choice from the seed (evolution and random search from an RNG per
candidate, derived from ``(seed, candidate_id)``; Optuna from its seeded sampler), so the same
seed and the same results told in the same order give the same search. ``ask`` may be called many
times before any ``tell``: several workers are in flight at once.

Resume: ``replay`` rebuilds a fresh strategy from lineage rows alone (no pickles). Each row
records ``num_asked_at_tell``, how many candidates had been asked when it was told; with the rows
in the order they were told this is the whole interleaving of asks and tells, so replay asks and
tells everything again at the same points and reaches the very state the search had. Candidates
asked but never told (in flight at a crash) come out of the next ``ask`` calls again, with their
ids and, drawn from the same state and RNG, their genomes. Told the same results in the same order,
a resumed search asks what the uninterrupted one would have: no id skipped, none asked twice.

Status of a result and what it does to a strategy:

- ``trained``: has a fitness; may become a parent.
- ``rejected`` (broke a constraint before training) and ``failed`` (crashed, ran out of memory,
  diverged): no fitness; never parents, never in a population (the TVN paper discards constraint
  breakers before training), so they take no one's place either.
- ``duplicate``: a network evaluated before, under these genes or others that build it (see
  ``tvnsearch.genome.plan.network_id``), its result reused through ``lookup`` instead of being run
  again. Evolution gives it no place in the population and refreshes nobody's age: the network is
  a member already, or was one and left, and a clone rejoining as a newborn would outlive its
  turn under aging. Optuna's strategies tell its trial the reused values.
"""

from __future__ import annotations

import importlib
import json
import math
import random
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from tvnsearch.genome.genes import Genome, genome_from_dict
from tvnsearch.genome.mutation import Mutation, mutate
from tvnsearch.genome.plan import network_id
from tvnsearch.genome.space import SearchSpace
from tvnsearch.status import Status

MAX_DRAWS = 1000  # random genomes or mutations drawn for one that passes ``feasible``
DIRECTIONS = ("maximize", "minimize")  # of an objective, as Optuna spells them
Objectives = tuple[tuple[str, str], ...]  # (lineage column, direction)


@dataclass(frozen=True)
class Candidate:
    candidate_id: int  # sequential from 0, in the order asked
    genome: Genome
    parent_id: int | None  # the candidate it was mutated from; None for a sampled genome
    mutation: str  # what changed from the parent, or "random" / "optuna"
    strategy: str


@dataclass(frozen=True)
class Result:
    """What became of a candidate; ``metrics`` holds further objectives, e.g. ``cpu_ms``."""

    status: Status
    fitness: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    # The standard error of ``fitness`` (what another training seed or validation draw could
    # move it by): fitnesses closer than this are ties. None where it was not estimated.
    fitness_noise: float | None = None

    def __post_init__(self) -> None:
        if self.fitness is not None and not math.isfinite(self.fitness):
            raise ValueError(f"a fitness must be finite, but got fitness={self.fitness!r}")
        if self.status == Status.TRAINED and self.fitness is None:
            raise ValueError("a trained candidate needs a fitness, but got fitness=None")
        if self.status in (Status.REJECTED, Status.FAILED) and self.fitness is not None:
            raise ValueError(f"a {self.status} candidate has no fitness, but got {self.fitness=}")

    def value(self, name: str) -> float | None:
        return self.fitness if name == "fitness" else self.metrics.get(name)

    def reused(self) -> Result:
        """This result told again for a duplicate genome (see ``Strategy.lookup``)."""
        return Result(Status.DUPLICATE, self.fitness, self.metrics, self.fitness_noise)


def check_objectives(candidate: Candidate, result: Result, objectives: Objectives) -> None:
    """Refuse a result with a fitness that lacks one of a multi-objective strategy's objectives."""
    missing = [n for n, _ in objectives if result.value(n) is None]
    if result.fitness is not None and missing:
        raise ValueError(
            f"candidate {candidate.candidate_id} has a fitness, so it needs every objective, "
            f"but it has no value for {missing}"
        )


class Record(Protocol):
    """What ``replay`` reads of a lineage row (and the ``metric_names`` columns of a strategy);
    ``tvnsearch.search.lineage.LineageRecord`` is one."""

    candidate_id: int
    genome_json: str
    parent_id: int | None
    mutation: str
    strategy: str
    status: str
    fitness: float | None
    fitness_noise: float | None
    num_asked_at_tell: int


class Strategy(ABC):
    """The ask/tell protocol and the bookkeeping every strategy shares.

    Subclasses say how a new candidate is made (``_new``) and what a result teaches (``_learn``).
    """

    name: ClassVar[str]
    # Whether it can be told candidates stopped early by multi-fidelity training
    # (``tvnsearch.train.fidelity``) beside candidates trained in full, and rank them apart.
    multi_fidelity: ClassVar[bool] = False
    # What it optimises: lineage columns with their directions (several: a Pareto front).
    objectives: Objectives = (("fitness", "maximize"),)

    def __init__(self, space: SearchSpace, *, seed: int) -> None:
        self.space = space
        self.seed = seed
        self._num_asked = 0
        self._in_flight: dict[int, Candidate] = {}
        self._again: deque[Candidate] = deque()  # in flight at a crash: to be asked again
        self._results: dict[str, Result] = {}  # by network id, the first told
        self._networks: dict[str, str] = {}  # genome id: network id, of every genome asked
        # The search's checks that need no measurement (``Gate.passes_bounds``): random and
        # mutated genomes are drawn from those that pass, so that rejections do not eat the
        # random phase. It must answer the same every time (replay asks again), and be set
        # before ``replay``.
        self.feasible: Callable[[Genome], bool] | None = None

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The ``Result.metrics`` this strategy reads, each a lineage column; it ignores others."""
        return ()

    @property
    def num_asked(self) -> int:
        """Candidate ids handed out so far: what a lineage row stores as ``num_asked_at_tell``."""
        return self._num_asked

    def ask(self) -> Candidate:
        """The next candidate: first those in flight at a crash (after ``replay``), then new."""
        if self._again:
            candidate = self._again.popleft()
        else:
            candidate = self._new(self._num_asked)
            self._num_asked += 1
        self._hand_out(candidate)
        return candidate

    def tell(self, candidate: Candidate, result: Result) -> None:
        """Learn from ``result``; each candidate asked is told exactly once."""
        if self._in_flight.get(candidate.candidate_id) != candidate:
            raise ValueError(
                f"candidate {candidate.candidate_id} is not in flight: "
                "it was never asked, or it was told already"
            )
        del self._in_flight[candidate.candidate_id]
        if result.status in (Status.TRAINED, Status.REJECTED):
            self._results.setdefault(self._networks[candidate.genome.id], self._kept(result))
        self._learn(candidate, result)

    def lookup(self, genome_id: str) -> Result | None:
        """The result of the network of a genome this strategy asked, trained or rejected
        before under any genes that build it, to reuse instead of running it.

        A failed genome is not remembered: failures can be transient (a lost worker, an
        out-of-memory beside another job), so it may be run again. Reuse a hit as a duplicate:
        ``strategy.tell(candidate, found.reused())``. The result holds only ``metric_names``, as
        a replay can restore it; the other measurements are in the first evaluation's row.
        """
        network = self._networks.get(genome_id)
        return None if network is None else self._results.get(network)

    def replay(self, records: Iterable[Record]) -> None:
        """Rebuild this fresh strategy from lineage rows, in the order they were told.

        Afterwards ``ask`` hands out again the candidates asked but never told, then new ones.
        """
        if self._num_asked:
            raise ValueError(f"replay needs a fresh strategy, but {self._num_asked} were asked")
        records = list(records)
        by_id = {r.candidate_id: r for r in records}
        if len(by_id) != len(records):
            raise ValueError("the lineage holds a candidate id twice")
        for record in records:
            while self._num_asked < record.num_asked_at_tell:
                self._replay_ask(by_id.get(self._num_asked))
            if record.candidate_id not in self._in_flight:
                raise ValueError(
                    f"candidate {record.candidate_id} was told before it was asked, "
                    f"but got num_asked_at_tell={record.num_asked_at_tell}"
                )
            self.tell(self._in_flight[record.candidate_id], self._result_of(record))
        self._again.extend(sorted(self._in_flight.values(), key=lambda c: c.candidate_id))
        self._in_flight.clear()

    def _replay_ask(self, record: Record | None) -> None:
        candidate = self._new(self._num_asked) if record is None else self._recorded(record)
        self._num_asked += 1
        self._hand_out(candidate)

    def _hand_out(self, candidate: Candidate) -> None:
        self._in_flight[candidate.candidate_id] = candidate
        if candidate.genome.id not in self._networks:
            self._networks[candidate.genome.id] = network_id(candidate.genome)

    def _recorded(self, record: Record) -> Candidate:
        if record.strategy != self.name:
            raise ValueError(
                f"cannot replay candidate {record.candidate_id} into strategy {self.name!r}, "
                f"but got strategy={record.strategy!r}"
            )
        source = f"lineage candidate {record.candidate_id}"
        genome = genome_from_dict(json.loads(record.genome_json), source=source)
        return Candidate(
            record.candidate_id, genome, record.parent_id, record.mutation, record.strategy
        )

    def _result_of(self, record: Record) -> Result:
        metrics = {n: v for n in self.metric_names if (v := getattr(record, n)) is not None}
        return Result(Status(record.status), record.fitness, metrics, record.fitness_noise)

    def _kept(self, result: Result) -> Result:
        metrics = {n: v for n in self.metric_names if (v := result.metrics.get(n)) is not None}
        return Result(result.status, result.fitness, metrics, result.fitness_noise)

    def _sample(self, rng: random.Random) -> Genome:
        """A random genome that passes ``feasible``, if one does within ``MAX_DRAWS`` draws
        (else the last drawn: the gate rejects it, naming why)."""
        return self._first_feasible(lambda: self.space.sample(rng))

    def _first_mutation(self, parent: Genome, rng: random.Random) -> Mutation:
        """A mutation of ``parent`` whose child passes ``feasible``, if one does in
        ``MAX_DRAWS`` draws (else the last drawn)."""
        mutations: list[Mutation] = []

        def draw() -> Genome:
            mutations.append(mutate(parent, self.space, rng))
            return mutations[-1].child

        self._first_feasible(draw)
        return mutations[-1]

    def _first_feasible(self, draw: Callable[[], Genome]) -> Genome:
        genome = draw()
        for _ in range(MAX_DRAWS - 1):
            if self.feasible is None or self.feasible(genome):
                break
            genome = draw()
        return genome

    def _rng(self, candidate_id: int) -> random.Random:
        # Seeding with a string hashes it (SHA-512): the same stream on every host and Python run.
        return random.Random(f"{self.seed}:{candidate_id}")

    @abstractmethod
    def _new(self, candidate_id: int) -> Candidate: ...

    @abstractmethod
    def _learn(self, candidate: Candidate, result: Result) -> None: ...


class RandomSearch(Strategy):
    """Every candidate sampled from the space; with the same seed, the very genomes that
    tournament evolution starts from, so the two compare on the same initial pool."""

    name = "random"
    multi_fidelity = True  # it learns nothing: a stopped candidate only costs less

    def _new(self, candidate_id: int) -> Candidate:
        genome = self._sample(self._rng(candidate_id))
        return Candidate(candidate_id, genome, None, "random", self.name)

    def _learn(self, candidate: Candidate, result: Result) -> None:
        pass


# Imported on first use, so that evolution alone never pays for importing Optuna.
STRATEGIES = {
    "evolution": "tvnsearch.search.evolution:Evolution",
    "pareto": "tvnsearch.search.pareto_evolution:ParetoEvolution",
    "random": "tvnsearch.search.strategies:RandomSearch",
    "tpe": "tvnsearch.search.optuna_strategy:TPE",
    "nsga2": "tvnsearch.search.optuna_strategy:NSGAII",
}


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name`` (imported now)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; one of {list(STRATEGIES)}")
    module, class_name = STRATEGIES[name].split(":")
    return getattr(importlib.import_module(module), class_name)


def make_strategy(name: str, space: SearchSpace, *, seed: int, **options: Any) -> Strategy:
    """The strategy registered as ``name``; ``options`` go to its constructor."""
    return strategy_class(name)(space, seed=seed, **options)
