from __future__ import annotations

import dataclasses
import random
import statistics
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tvnsearch.genome.genes import Genome
from tvnsearch.genome.plan import network_id
from tvnsearch.genome.space import SearchSpace
from tvnsearch.search.evolution import Evolution
from tvnsearch.search.lineage import LineageRecord
from tvnsearch.search.strategies import (
    STRATEGIES,
    Candidate,
    RandomSearch,
    Result,
    Status,
    Strategy,
    make_strategy,
)

# Small enough that every strategy gets past its random start within a short test.
OPTIONS = {
    "evolution": {"initial_size": 6, "tournament_size": 3, "population_size": 8, "aging": True},
    "pareto": {"initial_size": 6, "tournament_size": 3, "population_size": 8},
    "random": {},
    "tpe": {},
    "nsga2": {"population_size": 4},
}
BUDGET = 24
MAX_COST = 800_000  # rejects about a quarter of the tiny space's random genomes
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def evaluate(genome: Genome) -> Result:
    """A deterministic stand-in for the gate and training: any pure function of the genome."""
    cost = genome.resolution**2 * genome.num_frames
    cost *= sum(b.num_filters * b.num_repeats for b in genome.blocks)
    if cost > MAX_COST:
        return Result(Status.REJECTED)
    if int(genome.id, 16) % 11 == 0:
        return Result(Status.FAILED)
    fitness = len(genome.blocks) + sum(b.num_filters for b in genome.blocks) / 64
    fitness -= abs(genome.resolution - 64) / 32 + abs(genome.num_frames - 4) / 4
    return Result(Status.TRAINED, fitness, {"cpu_ms": cost / 1e5})


def drive(
    strategy: Strategy,
    records: list[LineageRecord],
    *,
    budget: int = BUDGET,
    workers: int = 3,
    crash_after: int | None = None,
    crash_before_asking: bool = True,
    evaluator: Callable[[Genome], Result] = evaluate,
) -> list[LineageRecord]:
    """A driver with ``workers`` in flight; which one finishes next depends on candidate ids
    alone, so a resumed run meets the same order of results as an uninterrupted one."""
    in_flight: dict[int, Candidate] = {}
    while True:
        if crash_before_asking and _crashed(records, crash_after):
            return records
        while len(in_flight) < workers and len(records) + len(in_flight) < budget:
            candidate = strategy.ask()
            found = strategy.lookup(candidate.genome.id)
            if found is None:
                in_flight[candidate.candidate_id] = candidate
            else:
                _tell(strategy, records, candidate, found.reused())
        if _crashed(records, crash_after) or not in_flight:
            return records
        done = min(in_flight, key=lambda i: (i + (i * 7919) % 5, i))
        candidate = in_flight.pop(done)
        _tell(strategy, records, candidate, evaluator(candidate.genome))


def _crashed(records: list[LineageRecord], crash_after: int | None) -> bool:
    return crash_after is not None and len(records) >= crash_after


def _tell(
    strategy: Strategy, records: list[LineageRecord], candidate: Candidate, result: Result
) -> None:
    strategy.tell(candidate, result)
    record = LineageRecord.told(
        candidate,
        result,
        run_id="test",
        seed=strategy.seed,
        num_asked_at_tell=strategy.num_asked,
        asked_at=NOW,
        finished_at=NOW,
    )
    records.append(record)


def strategy(name: str, space: SearchSpace, seed: int = 0) -> Strategy:
    return make_strategy(name, space, seed=seed, **OPTIONS[name])


@pytest.fixture(params=list(STRATEGIES))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def runs(tiny_space: SearchSpace) -> dict[str, list[LineageRecord]]:
    """One uninterrupted run per strategy, shared by the tests that compare against it."""
    return {n: drive(strategy(n, tiny_space), []) for n in STRATEGIES}


def test_asks_before_any_tell_are_distinct_sequential_candidates(name, tiny_space) -> None:
    s = strategy(name, tiny_space)
    asked = [s.ask() for _ in range(5)]
    assert [c.candidate_id for c in asked] == list(range(5))
    assert s.num_asked == 5
    assert all(c.strategy == name and tiny_space.validate(c.genome).valid for c in asked)
    for c in reversed(asked):  # told in any order
        s.tell(c, evaluate(c.genome))
    assert s.ask().candidate_id == 5


def test_a_candidate_is_told_exactly_once(name, tiny_space) -> None:
    s = strategy(name, tiny_space)
    c = s.ask()
    s.tell(c, Result(Status.FAILED))
    with pytest.raises(ValueError, match="not in flight"):
        s.tell(c, Result(Status.FAILED))
    stranger = dataclasses.replace(c, candidate_id=99)
    with pytest.raises(ValueError, match="not in flight"):
        s.tell(stranger, Result(Status.FAILED))


def test_lookup_reuses_trained_and_rejected_results_but_not_failed(name, tiny_space) -> None:
    s = strategy(name, tiny_space)
    a, b, c = s.ask(), s.ask(), s.ask()
    measured = {"cpu_ms": 3.0, "iterations": 300, "memory_mb": 9.0}
    s.tell(a, Result(Status.TRAINED, 1.5, measured))
    s.tell(b, Result(Status.REJECTED))
    s.tell(c, Result(Status.FAILED))
    kept = {n: measured[n] for n in s.metric_names}  # the further values it reads, if any
    assert s.lookup(a.genome.id) == Result(Status.TRAINED, 1.5, kept)
    assert s.lookup(b.genome.id) == Result(Status.REJECTED)
    assert s.lookup(c.genome.id) is None
    d = s.ask()
    s.tell(d, s.lookup(a.genome.id).reused())  # as a driver tells a duplicate


def test_a_run_covers_every_id_once_and_parents_have_a_fitness(name, runs) -> None:
    records = runs[name]
    assert sorted(r.candidate_id for r in records) == list(range(BUDGET))
    fitness = {r.candidate_id: r.fitness for r in records}
    parents = [r.parent_id for r in records if r.parent_id is not None]
    assert all(fitness[p] is not None for p in parents)  # rejected and failed never breed
    assert {r.status for r in records} >= {"trained", "rejected"}
    if name == "evolution":
        assert parents


def test_same_seed_same_search_other_seed_other_search(name, tiny_space, runs) -> None:
    assert drive(strategy(name, tiny_space), []) == runs[name]
    assert drive(strategy(name, tiny_space, seed=1), []) != runs[name]


@pytest.mark.parametrize("crash_before_asking", [True, False])
@pytest.mark.parametrize("crash_after", [4, 13])
def test_a_resumed_search_is_the_uninterrupted_one(
    name, tiny_space, runs, crash_after: int, crash_before_asking: bool
) -> None:
    first = drive(
        strategy(name, tiny_space),
        [],
        crash_after=crash_after,
        crash_before_asking=crash_before_asking,
    )
    resumed = strategy(name, tiny_space)
    resumed.replay(first)
    assert drive(resumed, list(first)) == runs[name]


def test_replay_asks_the_candidates_in_flight_again_with_their_ids(name, tiny_space) -> None:
    s = strategy(name, tiny_space)
    asked = [s.ask() for _ in range(4)]
    records: list[LineageRecord] = []
    for c in (asked[1], asked[3]):
        _tell(s, records, c, evaluate(c.genome))
    again = strategy(name, tiny_space)
    again.replay(records)
    assert [again.ask() for _ in range(2)] == [asked[0], asked[2]]
    assert again.ask().candidate_id == 4


def test_replay_needs_a_fresh_strategy_of_the_same_kind(name, tiny_space, runs) -> None:
    s = strategy(name, tiny_space)
    s.ask()
    with pytest.raises(ValueError, match="fresh strategy"):
        s.replay(runs[name])
    other = "random" if name != "random" else "evolution"
    with pytest.raises(ValueError, match="cannot replay"):
        strategy(other, tiny_space).replay(runs[name])


def test_replay_refuses_a_lineage_told_before_it_was_asked(tiny_space, runs) -> None:
    broken = [dataclasses.replace(r, num_asked_at_tell=0) for r in runs["random"]]
    with pytest.raises(ValueError, match="told before it was asked"):
        RandomSearch(tiny_space, seed=0).replay(broken)


@pytest.mark.parametrize(
    ("status", "fitness"),
    [(Status.TRAINED, None), (Status.TRAINED, float("nan")), (Status.REJECTED, 1.0)],
)
def test_a_result_refuses_a_fitness_that_contradicts_its_status(status, fitness) -> None:
    with pytest.raises(ValueError, match="fitness"):
        Result(status, fitness)


def test_random_search_starts_from_the_pool_evolution_starts_from(tiny_space) -> None:
    random_search = make_strategy("random", tiny_space, seed=3)
    evolution = make_strategy("evolution", tiny_space, seed=3)
    for _ in range(10):
        assert random_search.ask().genome == evolution.ask().genome


def test_an_unknown_strategy_is_named(tiny_space) -> None:
    with pytest.raises(ValueError, match="unknown strategy 'annealing'"):
        make_strategy("annealing", tiny_space, seed=0)


def closeness(genome: Genome) -> Result:
    """How near a fixed target network a genome is: a landscape where selection pays off."""
    fitness = -abs(genome.resolution - 64) / 16 - abs(genome.num_frames - 4) / 2
    for b in genome.blocks:
        fitness += (b.spatial_type == "depth") + (b.spatial_kernel == 3) + (b.act == "swish")
        fitness += (b.num_filters == 32) + (b.temporal_type == "1d")
    return Result(Status.TRAINED, fitness)


def test_evolution_beats_random_search_at_an_equal_budget(tiny_space) -> None:
    def best_fitness(s: Strategy) -> float:
        return max(r.fitness for r in drive(s, [], budget=300, workers=4, evaluator=closeness))

    seeds = range(6)
    evolution = statistics.mean(
        best_fitness(Evolution(tiny_space, seed=seed, initial_size=30, tournament_size=10))
        for seed in seeds
    )
    random_search = statistics.mean(best_fitness(RandomSearch(tiny_space, seed=s)) for s in seeds)
    assert evolution > random_search + 1.0, (evolution, random_search)


class Given(Strategy):
    """Asks the genomes it is given, in order: a strategy whose every candidate a test chooses."""

    name = "given"

    def __init__(self, space: SearchSpace, genomes: list[Genome]) -> None:
        super().__init__(space, seed=0)
        self.genomes = genomes

    def _new(self, candidate_id: int) -> Candidate:
        return Candidate(candidate_id, self.genomes[candidate_id], None, "given", self.name)

    def _learn(self, candidate: Candidate, result: Result) -> None:
        pass


def test_lookup_knows_a_network_under_other_genes(tiny_space) -> None:
    one_frame = tiny_space.sample(random.Random(0))
    one_frame = dataclasses.replace(one_frame, num_frames=1, frame_stride=1)
    twin = dataclasses.replace(one_frame, frame_stride=3)  # a one-frame clip has no stride
    other = dataclasses.replace(one_frame, resolution=48 if one_frame.resolution == 32 else 32)
    s = Given(tiny_space, [one_frame, twin, other])
    first, second, third = s.ask(), s.ask(), s.ask()
    assert twin.id != one_frame.id and network_id(twin) == network_id(one_frame)
    assert s.lookup(twin.id) is None  # nothing told yet
    s.tell(first, Result(Status.TRAINED, 1.5))
    assert s.lookup(twin.id) == Result(Status.TRAINED, 1.5)
    assert s.lookup(other.id) is None
    assert s.lookup("0123456789abcdef") is None  # a genome it never asked
    s.tell(second, s.lookup(twin.id).reused())
    s.tell(third, Result(Status.REJECTED))
    assert s.lookup(other.id) == Result(Status.REJECTED)
