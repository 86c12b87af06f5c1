from __future__ import annotations

import statistics

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_strategies import closeness, drive, evaluate

from tvnsearch.genome.genes import Genome
from tvnsearch.genome.space import SearchSpace
from tvnsearch.inspect.hypervolume import Reference, hypervolume
from tvnsearch.search.evolution import Evolution
from tvnsearch.search.lineage import LineageRecord
from tvnsearch.search.pareto_evolution import (
    ParetoEvolution,
    crowding_distances,
    nondominated_ranks,
)
from tvnsearch.search.strategies import RandomSearch, Result, Strategy, make_strategy
from tvnsearch.status import Status

# On one front (fitness up, cpu_ms up): the ends are infinitely far, the second member is the
# more crowded of the middle two (gaps 2/9 + 2/3 against 8/9 + 2/3).
FRONT = [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (4.0, 10.0)]


def trained(fitness: float, cpu_ms: float) -> Result:
    return Result(Status.TRAINED, fitness, {"cpu_ms": cpu_ms})


def told(s: ParetoEvolution, points: list[tuple[float, float]]) -> None:
    for fitness, cpu_ms in points:
        s.tell(s.ask(), trained(fitness, cpu_ms))


def dominated_by(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a != b and all(y <= x for x, y in zip(a, b, strict=True))


def peeled_ranks(costs: list[tuple[float, ...]]) -> list[int]:
    """Ranks by the definition: peel off the non-dominated, again and again."""
    ranks, left, rank = [0] * len(costs), set(range(len(costs))), 0
    while left:
        front = {i for i in left if not any(dominated_by(costs[i], costs[j]) for j in left)}
        for i in front:
            ranks[i] = rank
        left, rank = left - front, rank + 1
    return ranks


def test_ranks_and_crowding_by_hand() -> None:
    costs = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0), (2.0, 3.0), (3.0, 3.0), (2.0, 2.0)]
    ranks = nondominated_ranks(costs)
    assert ranks == [0, 0, 0, 1, 2, 0]  # equal vectors share a rank
    inf = float("inf")
    # Front 0 sorted by either objective: (1,3) (2,2) (2,2) (3,1); each middle one's neighbours
    # are 1 apart of a range of 2, in both objectives.
    assert crowding_distances(costs, ranks) == [inf, 1.0, inf, inf, inf, 1.0]


def test_three_objectives_rank_by_hand() -> None:
    costs = [(0.0, 0.0, 1.0), (1.0, 1.0, 0.0), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)]
    assert nondominated_ranks(costs) == [0, 0, 1, 2]


@given(
    st.integers(2, 3).flatmap(
        lambda k: st.lists(st.tuples(*[st.sampled_from([0.0, 1.0, 2.0, 3.0])] * k), max_size=30)
    )
)
def test_ranks_match_peeling_fronts_off(costs: list[tuple[float, ...]]) -> None:
    assert nondominated_ranks(costs) == peeled_ranks(costs)


def test_random_until_the_initial_pool_is_told_then_the_start_evolution_has(tiny_space) -> None:
    s = ParetoEvolution(tiny_space, seed=3, initial_size=2)
    evolution = Evolution(tiny_space, seed=3, initial_size=2)
    asked = [s.ask() for _ in range(5)]
    assert [c.genome for c in asked] == [evolution.ask().genome for _ in range(5)]
    assert all(c.parent_id is None and c.mutation == "random" for c in asked)
    s.tell(asked[0], Result(Status.REJECTED))
    s.tell(asked[1], trained(1.0, 2.0))
    assert s.ask().parent_id is None
    s.tell(asked[2], trained(2.0, 3.0))
    child = s.ask()
    assert child.parent_id in (1, 2) and child.mutation != "random"
    assert tiny_space.validate(child.genome).valid


def test_standing_is_rank_then_crowding_then_age(tiny_space) -> None:
    s = ParetoEvolution(tiny_space, seed=0, initial_size=5)
    told(s, [(0.5, 3.0), *FRONT])  # the first is dominated by (3.0, 3.0)
    ranks = [rank for rank, _, _ in s.standing()]
    assert ranks == [1, 0, 0, 0, 0]
    order = sorted(range(5), key=s.standing().__getitem__)
    assert [s.population[i].candidate.candidate_id for i in order] == [1, 4, 3, 2, 0]


def test_a_tournament_of_all_picks_the_best_standing(tiny_space) -> None:
    s = ParetoEvolution(tiny_space, seed=0, initial_size=5, tournament_size=5)
    told(s, [(0.5, 3.0), *FRONT])  # the oldest is dominated; ends beat the middle; older first
    assert {s.ask().parent_id for _ in range(20)} == {1}


def test_a_binary_tournament_never_picks_the_worst(tiny_space) -> None:
    s = ParetoEvolution(tiny_space, seed=0, initial_size=4)
    told(s, FRONT)
    parents = [s.ask().parent_id for _ in range(60)]
    assert 1 not in parents  # the most crowded: it loses to whomever it meets
    assert set(parents) == {0, 2, 3}


@pytest.mark.parametrize(
    ("points", "kept"),
    [
        ([*FRONT, (0.5, 3.0)], [0, 1, 2, 3]),  # the dominated newcomer leaves at once
        ([(0.5, 3.0), *FRONT], [1, 2, 3, 4]),  # the dominated oldest leaves
        ([*FRONT, (3.5, 6.0)], [0, 2, 3, 4]),  # all on the front: the most crowded leaves
    ],
    ids=["dominated-newcomer", "dominated-member", "most-crowded"],
)
def test_a_full_population_loses_its_last_in_standing(
    tiny_space, points: list[tuple[float, float]], kept: list[int]
) -> None:
    s = ParetoEvolution(tiny_space, seed=0, initial_size=5, population_size=4)
    told(s, points)
    assert [m.candidate.candidate_id for m in s.population] == kept


def test_only_trained_candidates_join_and_breed(tiny_space) -> None:
    s = ParetoEvolution(tiny_space, seed=0, initial_size=2, tournament_size=10)
    results = [
        Result(Status.REJECTED),
        Result(Status.FAILED),
        Result(Status.DUPLICATE),  # of a rejected genome
        trained(1.0, 2.0),
        Result(Status.DUPLICATE, 2.0, {"cpu_ms": 1.0}),  # of a trained one: a member already
        trained(2.0, 1.0),
    ]
    for result in results:
        s.tell(s.ask(), result)
    assert [m.candidate.candidate_id for m in s.population] == [3, 5]
    assert {s.ask().parent_id for _ in range(20)} == {5}  # (2.0, 1.0) dominates (1.0, 2.0)


def test_a_fitness_without_every_objective_is_refused(tiny_space) -> None:
    s = ParetoEvolution(
        tiny_space, seed=0, objectives=[["fitness", "maximize"], ["params", "minimize"]]
    )
    assert s.metric_names == ("params",)
    with pytest.raises(ValueError, match=r"no value for \['params'\]"):
        s.tell(s.ask(), trained(1.0, 2.0))


@pytest.mark.parametrize(
    "options",
    [
        {"initial_size": 0},
        {"tournament_size": 0},
        {"population_size": 0},
        {"objectives": [["fitness", "maximize"]]},
        {"objectives": [["fitness", "up"], ["cpu_ms", "minimize"]]},
        {"objectives": [["cpu_ms", "minimize"], ["cpu_ms", "minimize"]]},
        {"objectives": ["fitness", "cpu_ms"]},
    ],
)
def test_settings_that_cannot_work_are_refused(tiny_space, options: dict) -> None:
    with pytest.raises(ValueError):
        ParetoEvolution(tiny_space, seed=0, **options)


def test_recipe_options_make_it_by_name(tiny_space) -> None:
    objectives = [["fitness", "maximize"], ["gpu_ms", "minimize"], ["params", "minimize"]]
    s = make_strategy("pareto", tiny_space, seed=0, objectives=objectives, population_size=9)
    assert isinstance(s, ParetoEvolution) and s.metric_names == ("gpu_ms", "params")
    assert s.objectives == (("fitness", "maximize"), ("gpu_ms", "minimize"), ("params", "minimize"))


@pytest.mark.parametrize("population_size", [None, 6], ids=["unbounded", "capped"])
def test_replay_rebuilds_the_population_and_its_standing(
    tiny_space: SearchSpace, population_size: int | None
) -> None:
    def fresh() -> ParetoEvolution:
        return ParetoEvolution(
            tiny_space, seed=4, initial_size=5, tournament_size=3, population_size=population_size
        )

    running = fresh()
    records = drive(running, [], budget=40, crash_after=30)
    replayed = fresh()
    replayed.replay(records)
    assert replayed.population == running.population
    assert replayed.standing() == running.standing()
    assert replayed.num_asked == running.num_asked
    assert drive(replayed, records, budget=60) == drive(fresh(), [], budget=60)


def test_parents_always_had_a_fitness(tiny_space) -> None:
    records = drive(ParetoEvolution(tiny_space, seed=1, initial_size=5), [], budget=60)
    fitness = {r.candidate_id: r.fitness for r in records}
    parents = [r.parent_id for r in records if r.parent_id is not None]
    assert parents and all(fitness[p] is not None for p in parents)
    assert {r.status for r in records} >= {"trained", "rejected"}


def two_objectives(genome: Genome) -> Result:
    """``closeness`` to a target network, against ``evaluate``'s cost: a front to spread along."""
    cost = evaluate(genome).metrics.get("cpu_ms")
    return trained(closeness(genome).fitness, cost) if cost is not None else Result(Status.REJECTED)


def front_hypervolume(records: list[LineageRecord]) -> float:
    frame = pd.DataFrame([r.to_row() for r in records])
    return hypervolume(frame, Reference(("fitness", "cpu_ms"), (0.0, 8.0), ("", "")))


def test_it_covers_more_of_the_front_than_random_search(tiny_space) -> None:
    def covered(s: Strategy) -> float:
        return front_hypervolume(drive(s, [], budget=200, workers=4, evaluator=two_objectives))

    seeds = range(5)
    pareto = statistics.mean(
        covered(ParetoEvolution(tiny_space, seed=s, initial_size=30, population_size=30))
        for s in seeds
    )
    random_search = statistics.mean(covered(RandomSearch(tiny_space, seed=s)) for s in seeds)
    assert pareto > random_search * 1.15, (pareto, random_search)  # measured: 49.1 and 38.1
