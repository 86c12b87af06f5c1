from __future__ import annotations

import dataclasses
import json

import pytest
from genomes import block, genome
from test_strategies import drive, evaluate

from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Genome, genome_from_dict
from tvnsearch.genome.plan import network_id
from tvnsearch.genome.space import SearchSpace
from tvnsearch.search.evolution import Evolution, Member, winner
from tvnsearch.search.lineage import LineageRecord
from tvnsearch.search.strategies import Candidate, Result
from tvnsearch.status import Status


def trained(fitness: float) -> Result:
    return Result(Status.TRAINED, fitness)


def test_random_until_the_initial_pool_is_told_with_a_fitness(tiny_space) -> None:
    s = Evolution(tiny_space, seed=0, initial_size=3, tournament_size=2)
    asked = [s.ask() for _ in range(8)]  # however many are in flight
    assert all(c.parent_id is None and c.mutation == "random" for c in asked)
    s.tell(asked[0], Result(Status.REJECTED))
    s.tell(asked[1], Result(Status.FAILED))
    s.tell(asked[2], trained(1.0))
    s.tell(asked[3], trained(2.0))
    assert s.ask().parent_id is None  # two with a fitness: the pool is not full yet
    s.tell(asked[4], trained(0.5))
    child = s.ask()
    assert child.parent_id in (2, 3, 4)
    assert child.mutation != "random"
    assert tiny_space.validate(child.genome).valid


def test_a_tournament_over_the_whole_population_picks_the_fittest(tiny_space) -> None:
    s = Evolution(tiny_space, seed=0, initial_size=4, tournament_size=10)
    for fitness in (1.0, 3.0, 2.0, 0.0):
        s.tell(s.ask(), trained(fitness))
    assert {s.ask().parent_id for _ in range(20)} == {1}


@pytest.mark.parametrize(
    ("population_size", "aging", "kept"),
    [(None, False, [0, 1, 2, 3, 4]), (3, True, [2, 3, 4]), (3, False, [0, 2, 4])],
)
def test_a_full_population_loses_its_oldest_when_aging_else_its_worst(
    tiny_space, population_size: int | None, aging: bool, kept: list[int]
) -> None:
    s = Evolution(tiny_space, seed=0, initial_size=5, population_size=population_size, aging=aging)
    for fitness in (5.0, 1.0, 4.0, 2.0, 3.0):
        s.tell(s.ask(), trained(fitness))
    assert [m.candidate.candidate_id for m in s.population] == kept


def test_only_trained_results_join_the_population(tiny_space) -> None:
    s = Evolution(tiny_space, seed=0, initial_size=10, population_size=2, aging=True)
    statuses = [
        trained(1.0),
        Result(Status.REJECTED),
        Result(Status.FAILED),
        Result(Status.DUPLICATE),  # of a rejected network
        Result(Status.DUPLICATE, 2.0),  # of a trained one: not a newborn
        trained(3.0),
    ]
    for result in statuses:
        s.tell(s.ask(), result)
    assert [(m.candidate.candidate_id, m.fitness) for m in s.population] == [(0, 1.0), (5, 3.0)]


def test_a_duplicate_refreshes_nobodys_age(tiny_space) -> None:
    s = Evolution(tiny_space, seed=0, initial_size=3, population_size=2, aging=True)
    first, second = s.ask(), s.ask()
    s.tell(first, trained(1.0))
    s.tell(second, trained(2.0))
    clone = s.ask()  # the first's network again, told as the driver tells a duplicate
    s.tell(clone, Result(Status.DUPLICATE, 1.0))
    s.tell(s.ask(), trained(0.5))  # the pool is full now: the oldest, the first, leaves
    assert [m.candidate.candidate_id for m in s.population] == [1, 3]
    assert s.ask().parent_id in (1, 3)  # the pool counted 3 members, not the duplicate


def test_a_child_is_never_its_parents_network(tiny_space) -> None:
    records = drive(Evolution(tiny_space, seed=2, initial_size=5, tournament_size=3), [], budget=60)
    networks = {r.candidate_id: network_id(_genome(r.genome_json)) for r in records}
    children = [r for r in records if r.parent_id is not None]
    assert len(children) > 30
    assert all(networks[r.candidate_id] != networks[r.parent_id] for r in children)


def _genome(genome_json: str) -> Genome:
    return genome_from_dict(json.loads(genome_json))


def member(
    candidate_id: int, g: Genome, fitness: float, noise: float | None, iterations: int | None = None
) -> Member:
    candidate = Candidate(candidate_id, g, None, "random", "evolution")
    return Member(candidate, fitness, noise, iterations)


SMALL = genome(block(num_filters=8))
LARGE = genome(block(num_filters=32))  # the same block four times wider: more FLOPs


@pytest.mark.parametrize(
    ("large_noise", "small_noise", "winner_id"),
    [
        (None, None, 0),  # no noise known: strict, the fitter wins
        (0.05, 0.05, 1),  # 0.03 apart, within noise: a tie, the cheaper network wins
        (None, 0.05, 1),  # the noise of either makes the tie
        (0.01, 0.02, 0),  # 0.03 apart, outside both noises: the fitter wins
    ],
)
def test_a_tournament_ties_fitnesses_within_noise_and_the_cheaper_network_wins(
    large_noise: float | None, small_noise: float | None, winner_id: int
) -> None:
    contestants = [member(0, LARGE, 0.80, large_noise), member(1, SMALL, 0.77, small_noise)]
    assert winner(contestants).candidate.candidate_id == winner_id
    assert winner(contestants[::-1]).candidate.candidate_id == winner_id


def test_ties_of_equal_cost_go_to_the_oldest_and_the_fittest_is_strict_without_noise() -> None:
    twins = [member(3, SMALL, 0.8, 0.1), member(2, SMALL, 0.75, 0.1)]
    assert winner(twins).candidate.candidate_id == 2  # tied at equal FLOPs: the oldest
    equals = [member(5, LARGE, 0.8, None), member(4, SMALL, 0.8, None)]
    assert winner(equals).candidate.candidate_id == 4  # equal fitness: the oldest, as before
    assert winner([member(6, LARGE, 0.9, None)]).candidate.candidate_id == 6


def test_a_tournament_ranks_by_rung_reached_then_fitness_like_with_like() -> None:
    stopped = member(0, SMALL, 1.9, 0.5, iterations=10)  # fitter, but cut at the first rung
    full = member(1, LARGE, 0.7, 0.01, iterations=90)
    assert winner([stopped, full]).candidate.candidate_id == 1
    cheaper_but_shorter = member(2, SMALL, 0.69, 0.5, iterations=30)
    # within noise, but trained for less: not a tie, so the cheaper network does not win
    assert winner([full, cheaper_but_shorter]).candidate.candidate_id == 1
    assert winner([full, member(3, SMALL, 0.69, 0.5, iterations=90)]).candidate.candidate_id == 3


def test_evolution_keeps_the_iterations_each_member_trained_for(tiny_space) -> None:
    s = Evolution(tiny_space, seed=0, initial_size=2, tournament_size=2)
    a, b = s.ask(), s.ask()
    s.tell(a, Result(Status.TRAINED, 1.5, {"iterations": 10}))
    s.tell(b, Result(Status.TRAINED, 0.5, {"iterations": 90}))
    assert [m.iterations for m in s.population] == [10, 90]
    assert s.ask().parent_id == b.candidate_id  # the one trained in full, though less fit


@pytest.mark.parametrize(("noise", "parent"), [(0.05, "cheap"), (None, "dear")])
def test_evolution_breeds_from_the_cheaper_of_two_tied_within_noise(
    tiny_space, noise: float | None, parent: str
) -> None:
    def block_flops(c: Candidate) -> int:
        return sum(count_cost(c.genome, num_classes=1).block_flops)

    s = Evolution(tiny_space, seed=0, initial_size=2, tournament_size=2)
    cheap, dear = sorted((s.ask(), s.ask()), key=block_flops)
    assert block_flops(cheap) < block_flops(dear)
    s.tell(dear, Result(Status.TRAINED, 0.80, fitness_noise=noise))
    s.tell(cheap, Result(Status.TRAINED, 0.78, fitness_noise=noise))
    expected = {"cheap": cheap, "dear": dear}[parent].candidate_id
    assert {s.ask().parent_id for _ in range(5)} == {expected}


def noisy(g: Genome) -> Result:
    """``evaluate`` with a standard error wide enough that tournaments often tie."""
    result = evaluate(g)
    return dataclasses.replace(result, fitness_noise=0.5 if result.fitness is not None else None)


def test_replay_repeats_the_tournaments_tied_within_noise(tiny_space) -> None:
    def fresh() -> Evolution:
        return Evolution(tiny_space, seed=4, initial_size=5, tournament_size=4)

    def resumed(records: list[LineageRecord]) -> list[tuple]:
        s = fresh()
        s.replay(records)
        return asked(drive(s, list(records), budget=40, evaluator=noisy))

    uninterrupted = asked(drive(fresh(), [], budget=40, evaluator=noisy))
    first = drive(fresh(), [], budget=40, crash_after=20, evaluator=noisy)
    # The lineage keeps each fitness's noise, as the engine writes it.
    kept = [
        dataclasses.replace(r, fitness_noise=noisy(_genome(r.genome_json)).fitness_noise)
        for r in first
    ]
    assert resumed(kept) == uninterrupted
    assert resumed(first) != uninterrupted  # without the noise other parents win


def asked(records: list[LineageRecord]) -> list[tuple]:
    return [(r.candidate_id, r.genome_id, r.parent_id) for r in records]


@pytest.mark.parametrize(
    "options",
    [
        {"initial_size": 0},
        {"tournament_size": 0},
        {"population_size": 0},
        {"aging": True},
    ],
)
def test_settings_that_cannot_work_are_refused(tiny_space, options: dict) -> None:
    with pytest.raises(ValueError):
        Evolution(tiny_space, seed=0, **options)


@pytest.mark.parametrize(
    "options",
    [{}, {"population_size": 6}, {"population_size": 6, "aging": True}],
    ids=["unbounded", "worst-leaves", "aging"],
)
def test_replay_rebuilds_the_population_in_order(tiny_space: SearchSpace, options: dict) -> None:
    running = Evolution(tiny_space, seed=4, initial_size=5, tournament_size=3, **options)
    records = drive(running, [], budget=40, crash_after=30)
    replayed = Evolution(tiny_space, seed=4, initial_size=5, tournament_size=3, **options)
    replayed.replay(records)
    assert replayed.population == running.population
    assert replayed.num_asked == running.num_asked
