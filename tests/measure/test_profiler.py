from __future__ import annotations

import pytest
from genomes import small_genome

from tvnsearch.errors import Notice
from tvnsearch.measure import timing
from tvnsearch.measure.profile import PROBE_RUNS, Settings
from tvnsearch.measure.profiler import ProfileCache, ProfileLog, Profiler
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


def test_a_profile_log_seeds_a_later_profiler(tmp_path) -> None:
    log = ProfileLog(tmp_path / "profiles-cpu.jsonl")
    measured = Profiler(FAST).measure(small_genome(), 10)
    log.append([measured])
    later = Profiler(FAST, cache=ProfileCache(log.read()))
    assert later.measure(small_genome(), 10) == measured and later.num_measurements == 0


def test_a_log_cut_short_by_a_crash_keeps_every_whole_line(tmp_path) -> None:
    log = ProfileLog(tmp_path / "profiles-cpu.jsonl")
    measured = Profiler(FAST).measure(small_genome(), 10)
    log.append([measured])
    with log.path.open("a") as f:
        f.write('{"genome_id": "abc", "num_cl')  # kill -9 while writing
    with pytest.warns(Notice, match="1 line"):
        assert log.read() == [measured]


def test_moment_dependent_verdicts_are_neither_cached_nor_logged(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(timing, "available_bytes", lambda device: 1000)
    profiler = Profiler(FAST)
    oom = profiler.measure(small_genome(), 10)
    assert oom.out_of_memory and len(profiler.cache) == 0
    log = ProfileLog(tmp_path / "profiles-cpu.jsonl")
    log.append([oom])
    assert log.read() == [] and not log.path.exists()


def test_a_profile_from_another_device_is_not_reused() -> None:
    one_thread = Profiler(FAST)
    one_thread.measure(small_genome(), 10)
    two_threads = Profiler(
        Settings(threads=2, warmup=PROBE_RUNS + 1, runs=3, min_seconds=0.0), cache=one_thread.cache
    )
    assert two_threads.measure(small_genome(), 10).threads == 2
    assert two_threads.num_measurements == 1 and len(one_thread.cache) == 2


def test_a_corrupt_log_line_is_named_and_left_out_and_repair_rewrites_it(tmp_path) -> None:
    log = ProfileLog(tmp_path / "profiles-cpu.jsonl")
    measured = Profiler(FAST).measure(small_genome(), 10)
    log.append([measured])
    with log.path.open("ab") as f:
        f.write(b'{"oops"}\n\xff\xfe binary\n{"genome_id": "abc", "num_cl')  # then a crash
    with pytest.warns(Notice, match=r"profiles-cpu\.jsonl: 3 line\(s\) .* left out \(line 2 first"):
        assert log.read() == [measured]
    with pytest.warns(Notice):
        log.repair()
    log.append([measured])  # on a line of its own
    assert log.read() == [measured, measured]
