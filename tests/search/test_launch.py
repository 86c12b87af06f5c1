"""Starting a search's profilers on Ray: several of one kind, each on cores of its own."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest
from genomes import small_genome

from tvnsearch.measure.affinity import usable_cores
from tvnsearch.measure.profiler import ProfileLog, ProfilerPool
from tvnsearch.search import launch
from tvnsearch.search.lineage import read_lineage, records_from_frame
from tvnsearch.search.ray_session import start_ray, stop_ray
from tvnsearch.search.recipe import load_recipe
from tvnsearch.status import Status
from tvnsearch.train.fidelity import RungHistory, Rungs, rungs_from_json, stop_rung

LOCAL = Path(__file__).parents[2] / "runners" / "local.toml"


@pytest.fixture
def two_core_ray() -> Iterator[None]:
    start_ray(num_cpus=2)  # the search's own: loopback only, private token
    yield
    stop_ray()


@pytest.mark.skipif(len(usable_cores()) < 2, reason="needs two usable cores")
def test_num_profilers_start_that_many_each_on_its_own_core(
    two_core_ray, tmp_path: Path, monkeypatch
) -> None:
    # A machine of two cores has none left to train beside two profilers: this test lends
    # them both (a search refuses that, see check_cores).
    cores = usable_cores()[:2]
    monkeypatch.setattr(launch, "split_cores", lambda n: (cores[:n], cores[n:]))
    overrides = ["resources.num_profilers=2", "resources.profiler_threads=1"]
    overrides += ["resources.num_workers=1"]
    config = load_recipe(LOCAL, overrides)
    log = ProfileLog(tmp_path / "profiles-cpu.jsonl")
    profilers = launch.start_profilers(config, "cpu", log, tmp_path / "neighbours")
    try:
        assert len(profilers) == 2
        assert sorted(c for p in profilers for c in p.cores) == sorted(cores)
        pool = ProfilerPool(profilers)
        genomes = [small_genome(resolution=r) for r in (32, 40)]
        with concurrent.futures.ThreadPoolExecutor(2) as threads:
            profiles = list(threads.map(lambda g: pool.measure(g, 10), genomes))
        assert all(p.status == Status.ADMITTED for p in profiles)
        stats = [p.stats() for p in profilers]
        assert {tuple(s["cores"]) for s in stats} == {(c,) for c in cores}
        assert len({s["pid"] for s in stats}) == 2
        assert all(s["num_measurements"] == 1 for s in stats)  # both measured, side by side
    finally:
        for profiler in profilers:
            profiler.close()


def test_a_multi_fidelity_search_stops_below_each_cut_and_keeps_every_rung(searched_run) -> None:
    frame = read_lineage(searched_run)
    trained = records_from_frame(frame[frame["status"] == "trained"])
    rungs = Rungs((2, 4), reduction_factor=2.0)
    history = RungHistory(rungs)
    for record in trained:  # one worker: each candidate's cuts are those of the rows before it
        fitness_at = rungs_from_json(record.rungs)
        (cut,) = history.cuts()
        assert stop_rung(fitness_at, (cut,)) == len(fitness_at) - 1, record.candidate_id
        assert (record.iterations, record.fitness) == fitness_at[-1]
        history.record(fitness_at)
    reached = [r.iterations for r in trained]
    assert reached[0] == 4 and 2 in reached and 4 in reached[1:]


def test_mutated_children_start_from_their_parent_s_kept_weights(searched_run) -> None:
    frame = read_lineage(searched_run)
    trained = frame[frame["status"] == "trained"]
    children = trained[trained["parent_id"].notna()]
    assert len(children) and ((children["inherited"] > 0) & (children["inherited"] <= 1)).all()
    assert trained[trained["parent_id"].isna()]["inherited"].isna().all()  # sampled: from scratch
