"""Starting a search's profilers on Ray: several of one kind, each on cores of its own."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from genomes import small_genome

from tvnsearch.measure.affinity import usable_cores
from tvnsearch.measure.profiler import ProfileLog, ProfilerPool
from tvnsearch.search import launch
from tvnsearch.search.recipe import load_recipe
from tvnsearch.status import Status

LOCAL = Path(__file__).parents[2] / "runners" / "local.toml"


@pytest.fixture
def two_core_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


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
