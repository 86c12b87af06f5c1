"""Whole searches on embedded Ray: real training, interruption and resume, failures, status."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from conftest import SPACES_DIR

from tvnsearch.cli.main import main
from tvnsearch.data.synth import SynthConfig, write_synth
from tvnsearch.errors import InputError
from tvnsearch.genome.genes import genome_from_dict
from tvnsearch.genome.plan import plan_network
from tvnsearch.measure.profiler import ProfileLog
from tvnsearch.models.stages import stage_layout
from tvnsearch.search.launch import run_search
from tvnsearch.search.lineage import LineageWriter, read_lineage
from tvnsearch.search.ray_session import start_ray, stop_ray
from tvnsearch.search.runs import create_run, run_status
from tvnsearch.search.worker import Evaluation, Job
from tvnsearch.train.weights import read_weights, run_weights_path

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests

GENEROUS_MS = 10_000.0
RECIPE = """
[search]
name = "t"
space = "{space}"
strategy = "random"
budget = {budget}
seed = 1
[data]
path = "{data}"
cache_dir = "{cache}"
cache_size = 64
[train]
iterations = 2
batch_size = 4
[constraints]
{constraints}
[resources]
num_workers = {num_workers}
max_retries = 1
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synth(root / "synth", SynthConfig(num_videos=18, size=32, num_frames=8))
    return root


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    start_ray(num_cpus=2)  # the search's own: loopback only, private token
    yield
    stop_ray()


def new_run(
    folder: Path,
    data: Path,
    *,
    budget: int,
    constraints: str = "max_flops = 20_000_000",
    num_workers: int = 2,
    overrides: tuple[str, ...] = (),
    space: str = "tiny",
) -> Path:
    recipe = folder / "recipe.toml"
    recipe.write_text(
        RECIPE.format(
            space=SPACES_DIR / f"{space}.toml",
            data=data / "synth",
            cache=data / "frames",
            budget=budget,
            constraints=constraints,
            num_workers=num_workers,
        )
    )
    return create_run(recipe, overrides, results_dir=folder / "results")


def instant(job: Job, task: object) -> Evaluation:
    return Evaluation("trained", fitness=int(job.genome.id[:6], 16) % 1000 / 1000)


def unlucky(job: Job, task: object) -> Evaluation:
    if int(job.genome.id, 16) % 5 == 0:
        os._exit(1)  # the worker process dies, on every attempt
    if int(job.genome.id, 16) % 5 == 1:
        raise RuntimeError("a bug in training")
    return instant(job, task)


def test_a_real_search_trains_admitted_and_rejects_the_rest_untrained(
    tmp_path, data, local_ray, capsys
) -> None:
    # A runtime budget no candidate of the tiny space can break on any machine: every candidate is
    # measured by the profiler. The strategy draws its random genomes from those within the
    # counted budgets (FLOPs, a lower bound on memory), so none is rejected for them; the measured
    # peak memory (the allocator's count, the same on any machine) rejects some.
    constraints = f"max_flops = 20_000_000\nmax_memory_mb = 1.0\nmax_cpu_ms = {GENEROUS_MS}"
    run_dir = new_run(tmp_path, data, budget=8, constraints=constraints, num_workers=1)
    tally = run_search(run_dir)
    frame = read_lineage(run_dir)
    assert tally.done == len(frame) == 8 and sorted(frame["candidate_id"]) == list(range(8))
    trained = frame[frame["status"] == "trained"]
    rejected = frame[frame["status"] == "rejected"]
    assert len(trained) and len(rejected) and len(trained) + len(rejected) == 8
    assert (frame["flops"] <= 20_000_000).all()
    assert rejected["reason"].str.startswith("max_memory_mb").all()
    assert rejected["train_seconds"].isna().all() and rejected["worker_node"].isna().all()
    assert trained["fitness"].notna().all() and trained["worker_node"].notna().all()
    assert (trained["cpu_ms"] <= GENEROUS_MS).all() and trained["cpu_device"].notna().all()
    assert (trained["cpu_noise_ms"] >= 0).all()
    kept = ProfileLog(run_dir / "profiles-cpu.jsonl").read()  # written as they arrived
    assert {p.genome_id for p in kept} == set(frame["genome_id"])
    assert (run_dir / "roofline-cpu.json").is_file()
    assert main(["status", str(run_dir), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["complete"] and status["done"] == 8
    assert status["best"]["fitness"] == trained["fitness"].max()


class Interrupt(Exception):
    pass


def test_a_search_interrupted_mid_way_resumes_without_gaps_or_repeats(
    tmp_path, data, local_ray, monkeypatch
) -> None:
    run_dir = new_run(tmp_path, data, budget=30)
    append = LineageWriter.append
    rows = 0

    def dying(self: LineageWriter, record) -> None:
        nonlocal rows
        rows += 1
        if rows == 12:
            raise Interrupt
        append(self, record)

    monkeypatch.setattr(LineageWriter, "append", dying)
    with pytest.raises(Interrupt):
        run_search(run_dir, evaluator=instant)
    monkeypatch.undo()
    assert len(read_lineage(run_dir)) == 11 and not run_status(run_dir)["complete"]
    tally = run_search(run_dir, evaluator=instant)
    frame = read_lineage(run_dir)
    assert tally.done == 30 and sorted(frame["candidate_id"]) == list(range(30))
    assert run_status(run_dir)["complete"]


def test_failing_and_dying_workers_are_recorded_and_the_search_goes_on(
    tmp_path, data, local_ray
) -> None:
    run_dir = new_run(tmp_path, data, budget=12, constraints="")
    run_search(run_dir, evaluator=unlucky)
    frame = read_lineage(run_dir)
    assert sorted(frame["candidate_id"]) == list(range(12))
    admitted = frame[frame["status"] != "rejected"]
    residue = admitted["genome_id"].map(lambda g: int(g, 16) % 5)
    lost, raised = admitted[residue == 0], admitted[residue == 1]
    assert len(lost) and len(raised) and len(admitted) == 12
    assert (lost["status"] == "failed").all() and (raised["status"] == "failed").all()
    assert lost["reason"].str.startswith("worker lost after 2 attempt(s)").all()
    assert (raised["reason"] == "RuntimeError: a bug in training").all()
    for path in raised["log"]:  # the whole traceback, from the worker, kept by the driver
        story = (run_dir / path).read_text()
        assert "Traceback" in story and "in unlucky" in story
    assert all("worker lost" in (run_dir / path).read_text() for path in lost["log"])
    assert (admitted[residue > 1]["status"] == "trained").all()


def test_a_recipe_that_does_not_fit_this_machine_names_the_field(tmp_path, data) -> None:
    with pytest.raises(InputError, match=r"resources\.num_workers: 64 worker"):
        new_run(tmp_path, data, budget=2, constraints="max_cpu_ms = 5.0", num_workers=64)
    assert not (tmp_path / "results").exists()
    # a run made on a larger machine, resumed on this one
    run_dir = new_run(tmp_path, data, budget=2, constraints="max_cpu_ms = 5.0", num_workers=1)
    recipe = run_dir / "recipe.toml"
    recipe.write_text(recipe.read_text().replace("num_workers = 1\n", "num_workers = 64\n"))
    assert main(["resume", str(run_dir)]) == 2


def test_a_search_keeps_the_weights_of_its_trained_candidates(searched_run) -> None:
    frame = read_lineage(searched_run)
    trained = frame[frame["status"] == "trained"]
    kept = sorted(p.name for p in (searched_run / "weights").iterdir())
    assert kept == sorted(f"candidate-{c}.safetensors" for c in trained["candidate_id"])
    for _, row in trained.iterrows():
        info = read_weights(run_weights_path(searched_run, row["candidate_id"])).info
        assert info.genome.canonical_json == row["genome_json"] and info.num_classes == 9


def test_keep_weights_false_trains_without_keeping_them(tmp_path, data, local_ray) -> None:
    overrides = ("search.keep_weights=false",)
    run_dir = new_run(tmp_path, data, budget=2, num_workers=1, overrides=overrides)
    run_search(run_dir)
    assert (read_lineage(run_dir)["status"] == "trained").any()
    assert not (run_dir / "weights").exists()


def test_a_streaming_search_trains_pipelines_and_records_their_frame_times(
    tmp_path, data, local_ray
) -> None:
    run_dir = new_run(
        tmp_path,
        data,
        budget=6,
        constraints=f"max_flops = 20_000_000\nmax_frame_ms = {GENEROUS_MS}",
        num_workers=1,
        space="tiny_streaming",
    )
    run_search(run_dir)
    frame = read_lineage(run_dir)
    trained = frame[frame["status"] == "trained"]
    depths = [genome_from_dict(json.loads(g)).pipeline_depth for g in trained["genome_json"]]
    assert any(k > 0 for k in depths), depths  # pipelines were trained, not only clip networks
    assert trained["fitness"].notna().all() and (trained["frame_ms"] <= GENEROUS_MS).all()
    assert (trained["frames_per_second"] * trained["frame_ms"]).round(6).eq(1000).all()
    genomes = [genome_from_dict(json.loads(g)) for g in trained["genome_json"]]
    for genome, latency in zip(genomes, trained["latency_frames"], strict=True):
        layout = stage_layout(plan_network(genome), genome.pipeline_depth)
        assert latency == layout.latency_frames  # 0 for a clip network or a single stage
