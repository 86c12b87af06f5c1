"""The search loop without Ray: an in-process executor, a counted-only gate, a fake evaluator."""

from __future__ import annotations

import dataclasses
import io
import random
import time
import tomllib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
from conftest import SPACES_DIR
from genomes import small_genome

from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Genome
from tvnsearch.genome.plan import network_id
from tvnsearch.genome.space import SearchSpace, space_from_dict
from tvnsearch.measure.constraints import Constraints
from tvnsearch.measure.device import device_signature
from tvnsearch.measure.gate import Gate
from tvnsearch.measure.profile import Profile
from tvnsearch.measure.profiler import ProfilerPool
from tvnsearch.search.engine import Engine, gate_measurements, known_of, rung_history_of
from tvnsearch.search.evolution import Evolution
from tvnsearch.search.inline import InlineExecutor
from tvnsearch.search.lineage import (
    MEASUREMENTS,
    LineageRecord,
    LineageWriter,
    read_lineage,
    records_from_frame,
)
from tvnsearch.search.progress import Progress, Tally
from tvnsearch.search.runs import save_run_log
from tvnsearch.search.strategies import Candidate, RandomSearch, Result, Strategy
from tvnsearch.search.worker import Evaluation, Job, failed
from tvnsearch.status import Status
from tvnsearch.train.fidelity import (
    RungHistory,
    Rungs,
    rungs_from_json,
    rungs_of,
    rungs_to_json,
    stop_rung,
)
from tvnsearch.train.training import TrainConfig

MAX_PARAMS = 20_000  # rejects a good share of the tiny space


def score(genome: Genome) -> Evaluation:
    fitness = int(genome.id[:6], 16) % 1000 / 1000
    return Evaluation("trained", fitness=fitness, fitness_noise=fitness / 10, train_seconds=0.0)


def scored(job: Job, task: object = None) -> Evaluation:
    """A fake evaluator: the job's genome, scored at once."""
    return score(job.genome)


def run(
    run_dir: Path,
    strategy: Strategy,
    budget: int,
    evaluator: Callable = scored,
    *,
    num_workers: int = 2,
    num_measurers: int = 0,
    stream: io.StringIO | None = None,
    executor: InlineExecutor | None = None,
    gate: Gate | None = None,
    writer: type[LineageWriter] = LineageWriter,
    train: TrainConfig | None = None,
) -> Tally:
    """Run (or resume, as ``tvnsearch.search.launch.run_search`` does) a search without Ray."""
    frame = read_lineage(run_dir) if (run_dir / "lineage").exists() else None
    records = records_from_frame(frame) if frame is not None else []
    strategy.replay(records)
    tally = Tally(budget)
    for r in records:
        tally.add(r.candidate_id, r.status, r.fitness)
    gate = gate or Gate(Constraints(max_params=MAX_PARAMS), num_classes=9)
    with writer(run_dir, flush_rows=3) as lineage:
        engine = Engine(
            strategy,
            gate,
            executor or InlineExecutor(evaluator),
            lineage,
            run_id=run_dir.name,
            tally=tally,
            num_workers=num_workers,
            num_measurers=num_measurers,
            known=known_of(records),
            rung_history=rung_history_of(train, records) if train else None,
            progress=Progress(tally, stream=stream or io.StringIO()),
            save_log=partial(save_run_log, run_dir),
        )
        return engine.run()


def evolution(space: SearchSpace) -> Evolution:
    return Evolution(space, seed=3, initial_size=6, tournament_size=3)


def test_the_budget_is_candidates_told_each_once_in_order(tmp_path, tiny_space) -> None:
    calls: list[str] = []

    def counting(job: Job, task: object) -> Evaluation:
        calls.append(job.genome.id)
        return score(job.genome)

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
    def flaky(job: Job, task: object) -> Evaluation:
        if int(job.genome.id, 16) % 2:
            return Evaluation("failed", reason="loss became nan at iteration 3")
        return score(job.genome)

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

    def counting(job: Job, task: object) -> Evaluation:
        calls.append(job.genome.id)
        return score(job.genome)

    run(tmp_path, RandomSearch(one_genome_space(tiny_space), seed=0), 5, counting)
    frame = read_lineage(tmp_path)
    assert list(frame["status"]) == ["trained"] + ["duplicate"] * 4
    assert frame["fitness"].nunique() == 1 and frame["params"].nunique() == 1
    assert (frame["reason"][1:] == "same network as candidate 0").all()
    assert len(calls) == 1  # asked while it trained, a duplicate waited instead of training


class Given(RandomSearch):
    """Asks the given genomes in turn."""

    def __init__(self, space: SearchSpace, genomes: list[Genome]) -> None:
        super().__init__(space, seed=0)
        self.genomes = genomes

    def _new(self, candidate_id: int) -> Candidate:
        genome = self.genomes[candidate_id % len(self.genomes)]
        return Candidate(candidate_id, genome, None, "given", self.name)


def test_genes_that_build_the_same_network_are_trained_once(tmp_path, tiny_space) -> None:
    one_frame = dataclasses.replace(small_genome(), num_frames=1, frame_stride=1)
    other_genes = dataclasses.replace(one_frame, frame_stride=3)  # a dead gene with one frame
    assert other_genes.id != one_frame.id and network_id(other_genes) == network_id(one_frame)
    calls = []

    def counting(job: Job, task: object) -> Evaluation:
        calls.append(job.genome.id)
        return score(job.genome)

    run(tmp_path, Given(tiny_space, [one_frame, other_genes]), 4, counting)
    frame = read_lineage(tmp_path)
    assert list(frame["status"]) == ["trained"] + ["duplicate"] * 3
    assert list(frame["genome_id"]) == [one_frame.id, other_genes.id] * 2
    assert frame["params"].nunique() == 1 and frame["fitness"].nunique() == 1
    assert (frame["reason"][1:] == "same network as candidate 0").all()
    assert calls == [one_frame.id]  # asked while the first trained, the twin waited for it


class Interrupt(Exception):
    pass


def test_an_interrupted_search_resumes_to_the_same_lineage(tmp_path, tiny_space) -> None:
    run(tmp_path / "whole", evolution(tiny_space), 40)
    told = 0

    def interrupting(job: Job, task: object) -> Evaluation:
        nonlocal told
        told += 1
        if told == 12:
            raise Interrupt  # the driver dies with candidates in flight
        return score(job.genome)

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

    def with_weights(job: Job, task: object) -> Evaluation:
        return dataclasses.replace(score(job.genome), weights=job.genome.id.encode())

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


# As Ray does it: results in any order, workers lost and retried, a gate that takes its time.


def test_results_told_in_any_order_replay_to_the_same_search(tmp_path, tiny_space) -> None:
    strategy = evolution(tiny_space)
    run(tmp_path, strategy, 40, num_workers=4, executor=InlineExecutor(scored, seed=7))
    frame = read_lineage(tmp_path)
    assert sorted(frame["candidate_id"]) == list(range(40))
    assert list(frame["candidate_id"]) != sorted(frame["candidate_id"])  # told out of order
    assert list(frame["num_asked_at_tell"]) == sorted(frame["num_asked_at_tell"])
    replayed = evolution(tiny_space)
    replayed.replay(records_from_frame(frame))
    assert [strategy.ask() for _ in range(8)] == [replayed.ask() for _ in range(8)]


def test_a_lost_worker_is_retried_then_its_candidate_recorded_failed(tmp_path, tiny_space) -> None:
    executor = InlineExecutor(scored, seed=1, loss_rate=0.5, max_retries=1)
    run(tmp_path, evolution(tiny_space), 30, num_workers=3, executor=executor)
    frame = read_lineage(tmp_path)
    lost = frame[frame["reason"].str.startswith("worker lost", na=False)]
    trained = frame[frame["status"] == "trained"]
    assert len(frame) == 30 and len(lost) and len(trained)
    assert (lost["status"] == "failed").all() and lost["fitness"].isna().all()
    assert (lost["reason"] == "worker lost after 2 attempt(s): WorkerLostError").all()
    assert executor.num_attempts > len(trained) + len(lost)  # some tasks were tried again
    assert all("the worker process died" in (tmp_path / p).read_text() for p in lost["log"])


class SlowGate(Gate):
    def check(self, genome: Genome):
        time.sleep(0.003)
        return super().check(genome)


def test_a_slow_gate_loses_no_candidate_and_trains_no_genome_twice(tmp_path, tiny_space) -> None:
    calls: list[str] = []

    def counting(job: Job, task: object) -> Evaluation:
        calls.append(job.genome.id)
        return score(job.genome)

    gate = SlowGate(Constraints(max_params=MAX_PARAMS), num_classes=9)
    executor = InlineExecutor(counting, seed=3)
    run(tmp_path, evolution(tiny_space), 40, num_workers=3, executor=executor, gate=gate)
    frame = read_lineage(tmp_path)
    assert sorted(frame["candidate_id"]) == list(range(40))
    assert len(calls) == len(set(calls)) == (frame["status"] == "trained").sum()


# One schema: what the engine writes is in it, and a resumed run writes what an uninterrupted one
# does.


class Stream:
    """A profiler of made-up figures that a pipelined candidate's measurement has."""

    def measure(self, genome: Genome, num_classes: int, *, stop_above_ms=None, again=False):
        cost = count_cost(genome, num_classes)
        return Profile(
            genome.id,
            num_classes,
            device_signature("cpu", 1),
            Status.ADMITTED,
            cost.params,
            cost.flops,
            runs_ms=(2.0, 2.0, 2.5),
            peak_memory_mb=3.0,
            frame_runs_ms=(0.5, 0.6, 0.5),
            latency_frames=2,
        )


def streaming_gate() -> Gate:
    return Gate(
        Constraints(max_params=MAX_PARAMS, max_cpu_ms=1e6),
        num_classes=9,
        profilers={"cpu": Stream()},
    )


def test_every_column_the_engine_fills_is_in_the_schema(tiny_space) -> None:
    rng = random.Random(0)
    genome = next(g for g in iter(lambda: tiny_space.sample(rng), None) if small(g))
    verdict = streaming_gate().check(genome)
    evaluation = Evaluation("trained", *(1.0,) * 6, "host:1")  # every measured field set
    written = {*gate_measurements(verdict), *evaluation.measurements(), "reason", "log"}
    assert {"frame_ms", "frames_per_second", "latency_frames", "cpu_device"} <= written
    assert written <= set(MEASUREMENTS)
    assert set(MEASUREMENTS) <= {f.name for f in dataclasses.fields(LineageRecord)}


class StopAt(LineageWriter):
    rows = 3  # the driver dies after this many rows were told

    def append(self, record: LineageRecord) -> None:
        if record.candidate_id >= self.rows:
            raise Interrupt
        super().append(record)


def test_a_resumed_run_fills_the_same_columns_as_an_uninterrupted_one(tmp_path, tiny_space) -> None:
    space = one_genome_space(tiny_space)  # candidate 0 trains, every later one is a duplicate
    run(tmp_path / "whole", RandomSearch(space, seed=0), 6, gate=streaming_gate(), num_workers=1)
    cut = tmp_path / "cut"
    with pytest.raises(Interrupt):
        run(
            cut, RandomSearch(space, seed=0), 6, gate=streaming_gate(), writer=StopAt, num_workers=1
        )
    assert len(read_lineage(cut)) == StopAt.rows
    run(cut, RandomSearch(space, seed=0), 6, gate=streaming_gate(), num_workers=1)
    whole, resumed = read_lineage(tmp_path / "whole"), read_lineage(cut)
    assert list(resumed["status"]) == list(whole["status"]) == ["trained"] + ["duplicate"] * 5
    for (_, a), (_, b) in zip(whole.iterrows(), resumed.iterrows(), strict=True):
        assert set(a[a.notna()].index) == set(b[b.notna()].index), a["candidate_id"]
    assert resumed["frame_ms"].notna().all()


class Told(RandomSearch):
    """Random search that keeps every result it is told, in order."""

    def __init__(self, space: SearchSpace, *, seed: int) -> None:
        super().__init__(space, seed=seed)
        self.told: list[Result] = []

    def tell(self, candidate: Candidate, result: Result) -> None:
        self.told.append(result)
        super().tell(candidate, result)


def test_the_noise_of_fitness_is_told_and_recorded(tmp_path, tiny_space) -> None:
    strategy = Told(tiny_space, seed=0)
    run(tmp_path, strategy, 16)
    frame = read_lineage(tmp_path)
    trained = frame["status"] == "trained"
    assert trained.any() and (~trained).any()
    assert (frame.loc[trained, "fitness_noise"] == frame.loc[trained, "fitness"] / 10).all()
    assert frame.loc[~trained, "fitness_noise"].isna().all()  # rejected: never scored
    told = [r.fitness_noise for r in strategy.told]
    assert told == [None if pd.isna(n) else n for n in frame["fitness_noise"]]


def test_a_duplicate_row_keeps_the_noise_of_the_first_evaluation(tmp_path, tiny_space) -> None:
    strategy = Told(one_genome_space(tiny_space), seed=0)  # candidate 0, then duplicates of it
    run(tmp_path, strategy, 4, num_workers=1)
    frame = read_lineage(tmp_path)
    assert list(frame["status"]) == ["trained"] + ["duplicate"] * 3
    assert len(set(frame["fitness_noise"])) == 1 and frame["fitness_noise"][0] > 0
    assert strategy.told[0].fitness_noise == frame["fitness_noise"][0]


# Failures keep their story.


def test_a_failed_candidate_keeps_its_traceback_in_a_log_the_row_points_at(tmp_path, tiny_space):
    def broken(job: Job, task: object) -> Evaluation:
        try:
            raise RuntimeError(f"no kernel for {job.genome.id}\nsecond line")
        except RuntimeError as exc:
            return failed(exc)

    run(tmp_path, evolution(tiny_space), 6, broken)
    frame = read_lineage(tmp_path)
    failed_rows = frame[frame["status"] == "failed"]
    assert (
        len(failed_rows)
        and failed_rows["reason"].str.fullmatch(r"RuntimeError: no kernel for \w+").all()
    )
    for _, row in failed_rows.iterrows():
        assert row["log"] == f"logs/candidate-{row['candidate_id']}.log"
        story = (tmp_path / row["log"]).read_text()
        assert story.startswith("Traceback") and "in broken" in story and "second line" in story
    assert frame[frame["status"] != "failed"]["log"].isna().all()


class Sleepy(Stream):
    """A profiler that takes 50 ms a measurement, as a remote one takes its time."""

    in_flight = 0  # measurements under way, over every instance

    def measure(self, genome: Genome, num_classes: int, **options) -> Profile:
        Sleepy.in_flight += 1
        time.sleep(0.05)
        Sleepy.in_flight -= 1
        return super().measure(genome, num_classes)


def test_measurements_run_off_the_driver_s_thread_two_at_once(tmp_path, tiny_space) -> None:
    pool = ProfilerPool([Sleepy(), Sleepy()])
    constraints = Constraints(max_params=MAX_PARAMS, max_cpu_ms=1e6)
    gate = Gate(constraints, num_classes=9, profilers={"cpu": pool})
    trained_while_measuring = []

    def training(job: Job, task: object) -> Evaluation:
        trained_while_measuring.append(Sleepy.in_flight > 0)
        return score(job.genome)

    start = time.perf_counter()
    run(tmp_path, evolution(tiny_space), 24, training, gate=gate, num_measurers=2)
    elapsed = time.perf_counter() - start
    frame = read_lineage(tmp_path)
    assert sorted(frame["candidate_id"]) == list(range(24))
    measured = frame["cpu_ms"].notna().sum()
    assert measured >= 12 and measured * 0.05 / elapsed > 1.2  # measurements overlapped
    assert any(trained_while_measuring)  # the driver fed its workers meanwhile


def staged(rungs: Rungs, got: list[tuple]) -> Callable:
    """An evaluator with made-up learning curves (each genome's fitness grows by 0.2 a rung) that
    stops at a rung's cut as the worker does, and keeps the cuts it was given in ``got``."""

    def training(job: Job, task: object) -> Evaluation:
        got.append(job.cuts)
        base = int(job.genome.id[:6], 16) % 1000 / 1000
        full = tuple((it, base + 0.2 * i) for i, it in enumerate(rungs.iterations))
        reached = full[: stop_rung(full, job.cuts) + 1]
        iterations, fitness = reached[-1]
        json = rungs_to_json(reached)
        return Evaluation("trained", fitness=fitness, iterations=iterations, rungs=json)

    return training


def test_multi_fidelity_cuts_come_from_the_rungs_told_before(tmp_path, tiny_space) -> None:
    train = TrainConfig(iterations=90, rungs=3)  # rungs at 10, 30 and 90
    rungs = rungs_of(train.iterations, train.rungs)
    got: list[tuple] = []
    strategy = RandomSearch(tiny_space, seed=0)
    run(tmp_path, strategy, 40, staged(rungs, got), num_workers=1, train=train)
    records = records_from_frame(read_lineage(tmp_path))
    trained = [r for r in records if r.status == "trained"]
    assert got[0] == (None, None)  # the first goes through every rung
    history = RungHistory(rungs)
    for record, cuts in zip(trained, got, strict=True):  # one worker: cuts are never stale
        assert cuts == history.cuts()
        history.record(rungs_from_json(record.rungs))
        assert record.iterations == rungs_from_json(record.rungs)[-1][0]
    reached = [r.iterations for r in trained]
    assert reached.count(10) > len(trained) / 2 > reached.count(90) > 0  # most stopped at once
    assert rung_history_of(train, records).seen == history.seen
    assert rung_history_of(TrainConfig(iterations=90), records) is None  # plain training


def test_an_interrupted_multi_fidelity_search_resumes_to_the_same_lineage(
    tmp_path, tiny_space
) -> None:
    train = TrainConfig(iterations=90, rungs=3)
    rungs = rungs_of(train.iterations, train.rungs)
    # One worker: with more, the cuts of a candidate submitted while others train leave their
    # rungs out, where a resume (nothing in flight) would count them.
    one = {"num_workers": 1, "train": train}
    run(tmp_path / "whole", evolution(tiny_space), 40, staged(rungs, []), **one)
    got: list[tuple] = []
    training = staged(rungs, got)

    def interrupting(job: Job, task: object) -> Evaluation:
        if len(got) == 12:
            raise Interrupt  # the driver dies with candidates in flight
        return training(job, task)

    with pytest.raises(Interrupt):
        run(tmp_path / "cut", evolution(tiny_space), 40, interrupting, **one)
    run(tmp_path / "cut", evolution(tiny_space), 40, training, **one)
    columns = ["genome_id", "status", "iterations", "rungs", "fitness"]
    whole, resumed = (
        read_lineage(tmp_path / n).set_index("candidate_id").sort_index()[columns]
        for n in ("whole", "cut")
    )
    pd.testing.assert_frame_equal(resumed, whole)
    assert set(whole["iterations"].dropna()) == {10, 30, 90}


def test_a_child_is_sent_its_parent_s_kept_weights(tmp_path, tiny_space) -> None:
    kept: dict[int, bytes] = {}
    sent: dict[str, bytes | None] = {}

    def with_weights(job: Job, task: object) -> Evaluation:
        sent[job.genome.id] = job.parent_weights
        return dataclasses.replace(score(job.genome), weights=job.genome.id.encode())

    strategy = evolution(tiny_space)
    with LineageWriter(tmp_path) as lineage:
        tally = Tally(30)
        Engine(
            strategy,
            Gate(Constraints(max_params=MAX_PARAMS), num_classes=9),
            InlineExecutor(with_weights),
            lineage,
            run_id="r",
            tally=tally,
            save_weights=kept.__setitem__,
            load_weights=kept.get,
        ).run()
    frame = read_lineage(tmp_path)
    trained = frame[(frame["status"] == "trained")]
    by_id = frame.set_index("candidate_id")["genome_id"]
    for _, row in trained.iterrows():
        parent = row["parent_id"]
        expected = None if pd.isna(parent) else by_id[int(parent)].encode()
        assert sent[row["genome_id"]] == expected
    assert trained["parent_id"].notna().sum() > 5
