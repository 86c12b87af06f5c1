"""The search loop without Ray: an in-process executor, a counted-only gate, a fake evaluator."""

from __future__ import annotations

import dataclasses
import io
import random
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SPACES_DIR

from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Genome
from tvnsearch.genome.space import SearchSpace, space_from_dict
from tvnsearch.measure.constraints import Constraints
from tvnsearch.measure.gate import Gate
from tvnsearch.search.engine import Engine, InlineExecutor
from tvnsearch.search.evolution import Evolution
from tvnsearch.search.lineage import LineageRecord, LineageWriter, read_lineage, records_from_frame
from tvnsearch.search.progress import Progress, Tally
from tvnsearch.search.strategies import RandomSearch, Strategy
from tvnsearch.search.worker import Evaluation

MAX_PARAMS = 20_000  # rejects a good share of the tiny space


def score(genome: Genome, task: object = None) -> Evaluation:
    return Evaluation("trained", fitness=int(genome.id[:6], 16) % 1000 / 1000, train_seconds=0.0)


def run(
    run_dir: Path,
    strategy: Strategy,
    budget: int,
    evaluator: Callable = score,
    *,
    num_workers: int = 2,
    stream: io.StringIO | None = None,
) -> Tally:
    frame = read_lineage(run_dir) if (run_dir / "lineage").exists() else None
    tally = Tally(budget)
    if frame is not None:
        records = records_from_frame(frame)
        strategy.replay(records)
        for r in records:
            tally.add(r.candidate_id, r.status, r.fitness)
    gate = Gate(Constraints(max_params=MAX_PARAMS), num_classes=9)
    with LineageWriter(run_dir, flush_rows=3) as writer:
        engine = Engine(
            strategy,
            gate,
            InlineExecutor(evaluator),
            writer,
            run_id=run_dir.name,
            tally=tally,
            num_workers=num_workers,
            progress=Progress(tally, stream=stream or io.StringIO()),
        )
        return engine.run()


def evolution(space: SearchSpace) -> Evolution:
    return Evolution(space, seed=3, initial_size=6, tournament_size=3)


def test_the_budget_is_candidates_told_each_once_in_order(tmp_path, tiny_space) -> None:
    calls: list[str] = []

    def counting(genome: Genome, task: object) -> Evaluation:
        calls.append(genome.id)
        return score(genome)

    tally = run(tmp_path, evolution(tiny_space), 30, counting)
    frame = read_lineage(tmp_path)
    assert tally.done == len(frame) == 30
    assert sorted(frame["candidate_id"]) == list(range(30))
    assert list(frame["num_asked_at_tell"]) == sorted(frame["num_asked_at_tell"])
    rejected = frame[frame["status"] == "rejected"]
    assert len(rejected) and (rejected["params"] > MAX_PARAMS).all()
    assert rejected["reason"].str.startswith("max_params").all()
    assert not set(rejected["genome_id"]) & set(calls)  # never trained
    trained = frame[frame["status"] == "trained"]
    assert sorted(calls) == sorted(trained["genome_id"]) and (trained["params"] <= MAX_PARAMS).all()
    assert tally.best_fitness == trained["fitness"].max()


def test_a_candidate_that_fails_is_recorded_and_the_search_goes_on(tmp_path, tiny_space) -> None:
    def flaky(genome: Genome, task: object) -> Evaluation:
        if int(genome.id, 16) % 2:
            return Evaluation("failed", reason="loss became nan at iteration 3")
        return score(genome)

    run(tmp_path, evolution(tiny_space), 20, flaky)
    frame = read_lineage(tmp_path)
    failed = frame[frame["status"] == "failed"]
    assert len(frame) == 20 and len(failed) and failed["fitness"].isna().all()
    assert (failed["reason"] == "loss became nan at iteration 3").all()


def one_genome_space(space: SearchSpace) -> SearchSpace:
    """A space of one admissible genome: every gene fixed to a sampled genome's value."""
    rng = random.Random(0)
    genome = next(g for g in iter(lambda: space.sample(rng), None) if small(g)).to_dict()
    data = tomllib.loads((SPACES_DIR / "tiny.toml").read_text())
    data["genome"] = {k: [genome[k]] for k in data["genome"] if k != "num_blocks"}
    data["genome"]["num_blocks"] = [len(genome["blocks"])]
    data["block"] = {k: [genome["blocks"][0][k]] for k in data["block"]}
    return space_from_dict(data)


def small(genome: Genome) -> bool:
    return count_cost(genome, 9).params <= MAX_PARAMS and len(genome.blocks) == 1


def test_a_duplicate_reuses_the_first_result_and_its_measurements(tmp_path, tiny_space) -> None:
    calls = []

    def counting(genome: Genome, task: object) -> Evaluation:
        calls.append(genome.id)
        return score(genome)

    run(tmp_path, RandomSearch(one_genome_space(tiny_space), seed=0), 5, counting)
    frame = read_lineage(tmp_path)
    assert list(frame["status"]) == ["trained"] + ["duplicate"] * 4
    assert frame["fitness"].nunique() == 1 and frame["params"].nunique() == 1
    assert (frame["reason"][1:] == "same genome as candidate 0").all()
    assert len(calls) == 1  # asked while it trained, a duplicate waited instead of training


class Interrupt(Exception):
    pass


def test_an_interrupted_search_resumes_to_the_same_lineage(tmp_path, tiny_space) -> None:
    run(tmp_path / "whole", evolution(tiny_space), 40)
    told = 0

    def interrupting(genome: Genome, task: object) -> Evaluation:
        nonlocal told
        told += 1
        if told == 12:
            raise Interrupt  # the driver dies with candidates in flight
        return score(genome)

    with pytest.raises(Interrupt):
        run(tmp_path / "cut", evolution(tiny_space), 40, interrupting)
    partial = read_lineage(tmp_path / "cut")
    assert 0 < len(partial) < 40
    run(tmp_path / "cut", evolution(tiny_space), 40)
    whole, resumed = read_lineage(tmp_path / "whole"), read_lineage(tmp_path / "cut")
    assert sorted(resumed["candidate_id"]) == list(range(40))
    by_id = resumed.set_index("candidate_id")["genome_id"]
    assert by_id.sort_index().equals(whole.set_index("candidate_id")["genome_id"].sort_index())


def test_progress_lines_count_and_show_the_best(tmp_path, tiny_space) -> None:
    stream = io.StringIO()
    run(tmp_path, evolution(tiny_space), 12, stream=stream)
    last = stream.getvalue().strip().splitlines()[-1]
    assert last.startswith("[12/12] trained ") and "best 0." in last


def test_trained_weights_are_kept_before_their_row_and_only_theirs(tmp_path, tiny_space) -> None:
    events: list[str] = []
    kept: dict[int, bytes] = {}

    class Recording(LineageWriter):
        def append(self, record: LineageRecord) -> None:
            events.append(f"row {record.candidate_id}")
            super().append(record)

    def with_weights(genome: Genome, task: object) -> Evaluation:
        return dataclasses.replace(score(genome), weights=genome.id.encode())

    def save(candidate_id: int, data: bytes) -> None:
        events.append(f"weights {candidate_id}")
        kept[candidate_id] = data

    with Recording(tmp_path) as writer:
        Engine(
            RandomSearch(one_genome_space(tiny_space), seed=0),
            Gate(Constraints(max_params=MAX_PARAMS), num_classes=9),
            InlineExecutor(with_weights),
            writer,
            run_id="r",
            tally=Tally(3),
            save_weights=save,
        ).run()
    frame = read_lineage(tmp_path)
    assert list(frame["status"]) == ["trained", "duplicate", "duplicate"]
    assert events == ["weights 0", "row 0", "row 1", "row 2"]
    assert kept == {0: frame.at[0, "genome_id"].encode()}
