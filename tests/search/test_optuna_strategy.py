from __future__ import annotations

import dataclasses
import random

import optuna
import pytest
from optuna.trial import FixedTrial, TrialState
from test_strategies import drive

from tvnsearch.genome.space import SearchSpace
from tvnsearch.search.optuna_strategy import NSGAII, TPE, genome_from_trial, params_of
from tvnsearch.search.strategies import Result
from tvnsearch.status import Status


def test_params_describe_a_genome_exactly(space: SearchSpace) -> None:
    rng = random.Random(5)
    for _ in range(200):
        genome = space.sample(rng)
        assert genome_from_trial(space, FixedTrial(params_of(space, genome))) == genome


def test_block_parameters_exist_only_for_the_blocks_asked(tiny_space) -> None:
    s = TPE(tiny_space, seed=0)
    for _ in range(20):
        c = s.ask()
        params = s.study.trials[-1].params
        num_blocks = params["num_blocks"]
        assert num_blocks == len(c.genome.blocks)
        assert {k.split(".")[0] for k in params if k.startswith("b")} == {
            f"b{i}" for i in range(num_blocks)
        }
        assert "pipeline_depth" not in params  # a single choice in the tiny space
        for i, block in enumerate(c.genome.blocks):
            assert params[f"b{i}.squeeze_ratio.on"] == (block.squeeze_ratio != 0.0)
            assert (f"b{i}.non_local_width" in params) == (block.non_local_width != 0)
        s.tell(c, Result(Status.FAILED))


def test_results_become_trial_states(tiny_space) -> None:
    s = NSGAII(tiny_space, seed=0)
    asked, numbers = [], []
    for _ in range(4):
        asked.append(s.ask())
        numbers.append(s.study.trials[-1].number)  # before it, any with impossible geometry
    s.tell(asked[0], Result(Status.TRAINED, 1.5, {"cpu_ms": 20.0}))
    s.tell(asked[1], Result(Status.REJECTED))
    s.tell(asked[2], Result(Status.FAILED))
    s.tell(asked[3], Result(Status.DUPLICATE, 1.5, {"cpu_ms": 20.0}))
    trials = [s.study.trials[n] for n in numbers]
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    assert trials[0].values == [1.5, 20.0]


def test_a_fitness_without_every_objective_is_refused_and_can_be_told_again(tiny_space) -> None:
    s = NSGAII(tiny_space, seed=0)
    c = s.ask()
    with pytest.raises(ValueError, match="no value for \\['cpu_ms'\\]"):
        s.tell(c, Result(Status.TRAINED, 1.0))
    s.tell(c, Result(Status.TRAINED, 1.0, {"cpu_ms": 5.0}))


def test_objectives_need_a_direction(tiny_space) -> None:
    with pytest.raises(ValueError, match="directions"):
        TPE(tiny_space, seed=0, objectives=(("fitness", "up"),))


def test_impossible_geometry_is_told_failed_and_asked_again(tiny_space) -> None:
    cramped = dataclasses.replace(tiny_space, max_non_local_positions=1)
    s = TPE(cramped, seed=0)
    for _ in range(10):
        assert not cramped.geometry_errors(s.ask().genome)
    failed = [t for t in s.study.trials if t.state == TrialState.FAIL]
    assert failed  # a non-local layer over more than one position, told and asked again


def test_replay_keeps_the_recorded_genomes_when_the_sampler_asks_otherwise(tiny_space) -> None:
    records = drive(TPE(tiny_space, seed=0), [], budget=14)
    other = TPE(tiny_space, seed=1)  # another sampler stream: every re-ask differs
    other.replay(records)
    done = [t for t in other.study.trials if t.state != TrialState.FAIL]
    genomes = [genome_from_trial(tiny_space, FixedTrial(t.params)) for t in done]
    not_failed = sorted((r.candidate_id, r.genome_id) for r in records if r.status != "failed")
    assert [g.id for g in genomes] == [genome_id for _, genome_id in not_failed]
    assert other.ask().candidate_id == len(records)


def test_optuna_says_nothing(tiny_space, capfd) -> None:
    optuna.logging.set_verbosity(optuna.logging.INFO)
    s = TPE(tiny_space, seed=0)
    s.tell(s.ask(), Result(Status.TRAINED, 1.0))
    assert capfd.readouterr() == ("", "")
