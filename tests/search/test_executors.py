from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterator

import pytest
import ray
from genomes import small_genome

from tvnsearch.errors import SearchStopped
from tvnsearch.genome.genes import Genome
from tvnsearch.measure.affinity import pin_process, split_cores, usable_cores
from tvnsearch.measure.constraints import Constraints
from tvnsearch.measure.gate import Gate
from tvnsearch.measure.profile import PROBE_RUNS, Settings
from tvnsearch.search.executors import RemoteProfiler, start_profiler
from tvnsearch.search.ray_session import start_ray, stop_ray
from tvnsearch.status import Status

FAST = Settings(warmup=PROBE_RUNS + 1, runs=3, min_seconds=0.0)
needs_two_cores = pytest.mark.skipif(len(usable_cores()) < 2, reason="needs two usable cores")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    start_ray(num_cpus=2)  # the search's own: loopback only, private token
    yield
    stop_ray()


@pytest.fixture(scope="module")
def profiler(local_ray) -> Iterator[RemoteProfiler]:
    remote = start_profiler(FAST)
    yield remote
    remote.close()


def huge_genome() -> Genome:
    """Valid, but its activations alone need far more memory than any test machine has."""
    block = dataclasses.replace(small_genome().blocks[0], spatial_stride=1, num_filters=2048)
    return Genome(320, 32, 1, 0, (block,))


@needs_two_cores
def test_the_profiler_holds_its_cores_and_threads(profiler: RemoteProfiler) -> None:
    reserved, _ = split_cores(FAST.threads)
    stats = profiler.stats()
    assert profiler.cores == reserved and stats["cores"] == list(reserved)
    assert stats["threads"] == FAST.threads and stats["pid"] != os.getpid()
    assert ray.available_resources().get("CPU", 0) <= 2 - len(reserved)


@needs_two_cores
def test_remote_measurements_are_real_and_cached(profiler: RemoteProfiler) -> None:
    before = profiler.stats()["num_measurements"]
    first = profiler.measure(small_genome(), 10)
    second = profiler.measure(small_genome(), 10)
    assert first.status == Status.ADMITTED and first.runs == FAST.runs and first.median_ms > 0
    assert first.peak_memory_mb > 0
    assert second == first and profiler.stats()["num_measurements"] == before + 1
    assert first.device == profiler.signature


@needs_two_cores
def test_a_gate_on_the_remote_profiler_rejects_and_records_errors(profiler) -> None:
    gate = Gate(Constraints(max_cpu_ms=1e-3), num_classes=10, profilers={"cpu": profiler})
    verdict = gate.check(small_genome(num_filters=16))
    assert verdict.status == Status.REJECTED and verdict.stage == "probe"
    oom = gate.check(huge_genome())
    assert oom.status == Status.REJECTED and oom.constraint == "device_memory"
    assert "MiB free" in oom.reason


@needs_two_cores
def test_a_dead_profiler_is_replaced_then_stops_the_search_if_it_keeps_dying(local_ray) -> None:
    remote = RemoteProfiler(FAST, split_cores(1)[0], max_deaths=2)
    try:
        first_pid = remote.stats()["pid"]
        os.kill(first_pid, signal.SIGKILL)  # the out-of-memory killer, say
        died = remote.measure(small_genome(), 10)
        assert died.status == Status.FAILED and "profiler process died" in died.reason
        assert "profiler process died" in died.log
        assert remote.measure(small_genome(), 10).status == Status.ADMITTED  # replaced
        assert remote.stats()["pid"] != first_pid and remote.num_deaths == 0
        os.kill(remote.stats()["pid"], signal.SIGKILL)
        remote.measure(small_genome(num_filters=12), 10)
        os.kill(remote.stats()["pid"], signal.SIGKILL)
        with pytest.raises(SearchStopped, match="cpu profiler died 2 times in a row"):
            remote.measure(small_genome(num_filters=16), 10)
    finally:
        remote.close()


@needs_two_cores
def test_a_measurement_past_its_timeout_fails_and_the_profiler_is_replaced(local_ray) -> None:
    slow = dataclasses.replace(FAST, min_seconds=5.0)
    remote = RemoteProfiler(slow, split_cores(1)[0], timeout_seconds=0.5)
    try:
        pid = remote.stats()["pid"]
        profile = remote.measure(small_genome(), 10)
        assert profile.status == Status.FAILED and "no answer within 0.5 s" in profile.reason
        assert remote.stats()["pid"] != pid
    finally:
        remote.close()


@needs_two_cores
def test_a_new_profiler_starts_with_what_was_measured(local_ray, profiler) -> None:
    measured = profiler.measure(small_genome(num_filters=20), 10)
    remote = RemoteProfiler(FAST, split_cores(1)[0], known=lambda: [measured])
    try:
        assert remote.measure(small_genome(num_filters=20), 10) == measured
        assert remote.stats()["num_measurements"] == 0
    finally:
        remote.close()


def test_reserving_every_core_is_refused() -> None:
    with pytest.raises(ValueError, match="leave some to train"):
        split_cores(len(usable_cores()))


@needs_two_cores
def test_pinning_moves_every_thread_of_this_process() -> None:
    before = os.sched_getaffinity(0)
    try:
        target = {min(before)}
        assert pin_process(target)
        threads = os.listdir("/proc/self/task")
        assert all(os.sched_getaffinity(int(t)) == target for t in threads)
    finally:
        pin_process(before)
