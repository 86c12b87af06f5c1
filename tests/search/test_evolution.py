from __future__ import annotations

import pytest
from test_strategies import drive

from tvnsearch.genome.space import SearchSpace
from tvnsearch.search.evolution import Evolution
from tvnsearch.search.strategies import Result
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


def test_only_results_with_a_fitness_join_the_population(tiny_space) -> None:
    s = Evolution(tiny_space, seed=0, initial_size=10, population_size=2, aging=True)
    statuses = [
        trained(1.0),
        Result(Status.REJECTED),
        Result(Status.FAILED),
        Result(Status.DUPLICATE),  # of a rejected genome
        Result(Status.DUPLICATE, 2.0),  # of a trained one: a newborn member
    ]
    for result in statuses:
        s.tell(s.ask(), result)
    assert [(m.candidate.candidate_id, m.fitness) for m in s.population] == [(0, 1.0), (4, 2.0)]


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
