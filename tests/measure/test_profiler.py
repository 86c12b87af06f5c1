from __future__ import annotations

import pytest
from genomes import small_genome

from tvnsearch.errors import InputError
from tvnsearch.measure import timing
from tvnsearch.measure.profile import PROBE_RUNS, Settings
from tvnsearch.measure.profiler import ProfileCache, Profiler
from tvnsearch.status import Status

FAST = Settings(warmup=PROBE_RUNS + 1, runs=3, min_seconds=0.0)


def test_a_repeated_request_is_answered_from_the_cache() -> None:
    profiler = Profiler(FAST)
    first = profiler.measure(small_genome(), 10)
    again = profiler.measure(small_genome(), 10)
    assert again is first and profiler.num_measurements == 1
    other_head = profiler.measure(small_genome(), 5)
    assert other_head.num_classes == 5 and profiler.num_measurements == 2


def test_an_early_stop_answers_only_budgets_it_still_breaks() -> None:
    profiler = Profiler(FAST)
    stopped = profiler.measure(small_genome(), 10, stop_above_ms=1e-6)
    assert stopped.status == Status.REJECTED and stopped.stopped_early
    assert profiler.measure(small_genome(), 10, stop_above_ms=2e-6) is stopped
    assert profiler.num_measurements == 1
    full = profiler.measure(small_genome(), 10, stop_above_ms=None)  # needs the real figure
    assert full.status == Status.ADMITTED and profiler.num_measurements == 2
    assert profiler.measure(small_genome(), 10, stop_above_ms=1e-6) is full


def test_failures_are_not_kept(monkeypatch) -> None:
    def broken(*args):
        raise ValueError("flaky")

    monkeypatch.setattr(timing, "build_model", broken)
    profiler = Profiler(FAST)
    assert profiler.measure(small_genome(), 10).status == Status.FAILED
    assert profiler.measure(small_genome(), 10).status == Status.FAILED
    assert profiler.num_measurements == 2 and len(profiler.cache) == 0


def test_the_cache_is_kept_in_a_json_file(tmp_path) -> None:
    path = tmp_path / "profiles.json"
    profiler = Profiler(FAST, cache=ProfileCache(path))
    measured = profiler.measure(small_genome(), 10)
    profiler.cache.save()
    later = Profiler(FAST, cache=ProfileCache(path))
    assert later.measure(small_genome(), 10) == measured and later.num_measurements == 0


def test_a_profile_from_another_device_is_not_reused() -> None:
    one_thread = Profiler(FAST)
    one_thread.measure(small_genome(), 10)
    two_threads = Profiler(
        Settings(threads=2, warmup=PROBE_RUNS + 1, runs=3, min_seconds=0.0), cache=one_thread.cache
    )
    assert two_threads.measure(small_genome(), 10).threads == 2
    assert two_threads.num_measurements == 1 and len(one_thread.cache) == 2


def test_a_corrupt_cache_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "profiles.json"
    path.write_text("[{oops")
    with pytest.raises(InputError, match=r"profiles\.json: not valid JSON"):
        ProfileCache(path)
    path.write_text('[{"genome_id": "abc"}]')
    with pytest.raises(InputError, match=r"profiles\.json: \[0\]: not a profile record"):
        ProfileCache(path)
