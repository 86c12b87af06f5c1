from __future__ import annotations

import dataclasses

import pytest
from genomes import small_genome

from tvnsearch.errors import InputError
from tvnsearch.genome.cost import count_cost
from tvnsearch.genome.genes import Genome
from tvnsearch.measure import timing
from tvnsearch.measure.constraints import Constraints
from tvnsearch.measure.device import device_signature
from tvnsearch.measure.gate import Gate
from tvnsearch.measure.predictor import MIN_CHECKED, LatencyPredictor
from tvnsearch.measure.profile import PROBE_RUNS, Profile, Settings
from tvnsearch.measure.profiler import Profiler
from tvnsearch.search.engine import gate_measurements
from tvnsearch.status import Status

FAST = Settings(warmup=PROBE_RUNS + 1, runs=5, min_seconds=0.0)


class Scripted:
    """A profiler that returns the runtime the test chose; counts and records its calls."""

    def __init__(self, runtime_ms: dict[str, float]) -> None:
        self.runtime_ms = runtime_ms
        self.calls: list[tuple[str, float | None]] = []

    def measure(self, genome: Genome, num_classes: int, *, stop_above_ms=None, again=False):
        self.calls.append((genome.id, stop_above_ms))
        ms = self.runtime_ms[genome.id]
        cost = count_cost(genome, num_classes)
        stopped = stop_above_ms is not None and ms > stop_above_ms
        return Profile(
            genome.id,
            num_classes,
            device_signature("cpu", 1),
            Status.REJECTED if stopped else Status.ADMITTED,
            cost.params,
            cost.flops,
            runs_ms=(ms,) * (PROBE_RUNS if stopped else 5),
            peak_memory_mb=None if stopped else 10.0,
            stopped_early=stopped,
        )


def widths(*num_filters: int) -> list[Genome]:
    return [small_genome(num_filters=n) for n in num_filters]


def test_cheap_limits_reject_before_any_measurement() -> None:
    small, large = widths(8, 64)
    limit = count_cost(large, 10).params - 1
    profiler = Profiler(FAST)
    gate = Gate(Constraints(max_params=limit), num_classes=10, profilers={"cpu": profiler})
    rejected, admitted = gate.check(large), gate.check(small)
    assert rejected.status == Status.REJECTED and rejected.stage == "cost"
    assert (rejected.constraint, rejected.value, rejected.limit) == ("max_params", limit + 1, limit)
    assert rejected.profiles == () and profiler.num_measurements == 1  # only the admitted one
    assert admitted.admitted and admitted.profiles[0].status == Status.ADMITTED


def test_flops_are_checked_without_a_profiler() -> None:
    g = small_genome(num_filters=64)
    flops = count_cost(g, 10).flops
    verdict = Gate(Constraints(max_flops=flops // 2), num_classes=10).check(g)
    assert verdict.status == Status.REJECTED and verdict.stage == "cost"
    assert (verdict.constraint, verdict.value) == ("max_flops", flops)
    assert Gate(Constraints(max_flops=flops), num_classes=10).check(g).admitted


def test_memory_is_bounded_before_and_measured_after() -> None:
    g = small_genome(num_filters=64)
    bound_mb = count_cost(g, 10).min_memory_bytes / 2**20
    profiler = Profiler(FAST)
    below_bound = Gate(
        Constraints(max_memory_mb=bound_mb / 2), num_classes=10, profilers={"cpu": profiler}
    )
    verdict = below_bound.check(g)
    assert verdict.stage == "cost" and verdict.constraint == "max_memory_mb"
    assert "(lower bound)" in verdict.reason and profiler.num_measurements == 0
    peak_mb = profiler.measure(g, 10).peak_memory_mb
    assert bound_mb <= peak_mb
    below_peak = Gate(
        Constraints(max_memory_mb=peak_mb * 0.99), num_classes=10, profilers={"cpu": profiler}
    )
    verdict = below_peak.check(g)
    assert verdict.stage == "measurement" and verdict.constraint == "max_memory_mb"
    assert verdict.value == peak_mb
    at_peak = Gate(Constraints(max_memory_mb=peak_mb), num_classes=10, profilers={"cpu": profiler})
    assert at_peak.check(g).admitted


def test_a_runtime_budget_is_enforced_on_real_measurements() -> None:
    g = small_genome()
    profiler = Profiler(FAST)
    runtime = profiler.measure(g, 10).runtime_ms
    admit = Gate(
        Constraints(max_cpu_ms=100 * runtime), num_classes=10, profilers={"cpu": Profiler(FAST)}
    )
    assert admit.check(g).admitted
    # Over the budget, but not far enough for the probe to stop: the full measurement decides.
    strict = Gate(
        Constraints(max_cpu_ms=runtime / 100),
        num_classes=10,
        profilers={"cpu": Profiler(FAST)},
        early_exit_factor=1e6,
    )
    verdict = strict.check(g)
    assert verdict.status == Status.REJECTED and verdict.stage == "measurement"
    assert verdict.constraint == "max_cpu_ms" and verdict.value > verdict.limit
    assert verdict.profiles[0].runs == FAST.runs


def test_far_over_the_budget_exits_after_the_probe() -> None:
    g = small_genome()
    runtime = Profiler(FAST).measure(g, 10).runtime_ms
    gate = Gate(
        Constraints(max_cpu_ms=runtime / 20), num_classes=10, profilers={"cpu": Profiler(FAST)}
    )
    verdict = gate.check(g)
    assert verdict.status == Status.REJECTED and verdict.stage == "probe"
    assert verdict.profiles[0].runs <= PROBE_RUNS < FAST.runs
    assert verdict.value > 1.5 * verdict.limit


def test_the_early_exit_threshold_is_the_factor_times_the_budget() -> None:
    fast, slow = widths(8, 16)
    profiler = Scripted({fast.id: 9.0, slow.id: 20.0})
    gate = Gate(Constraints(max_cpu_ms=10.0), num_classes=10, profilers={"cpu": profiler})
    assert gate.check(fast).admitted
    assert gate.check(slow).stage == "probe"
    assert [stop for _, stop in profiler.calls] == [15.0, 15.0]


@pytest.mark.parametrize(("runtime", "admitted"), [(9.8, True), (10.2, False), (10.45, False)])
def test_a_runtime_within_noise_of_the_budget_is_measured_twice(runtime, admitted) -> None:
    genome = widths(8)[0]
    profiler = Scripted({genome.id: runtime})
    gate = Gate(Constraints(max_cpu_ms=10.0), num_classes=10, profilers={"cpu": profiler})
    verdict = gate.check(genome)
    assert len(profiler.calls) == 2 and verdict.admitted == admitted
    assert admitted or ("measured twice" in verdict.reason and verdict.stage == "remeasurement")


def test_the_cache_spares_a_second_measurement() -> None:
    profiler = Profiler(FAST)
    gate = Gate(Constraints(max_cpu_ms=1e4), num_classes=10, profilers={"cpu": profiler})
    first, second = gate.check(small_genome()), gate.check(small_genome())
    assert first.admitted and second.admitted and profiler.num_measurements == 1
    assert second.profiles[0] is first.profiles[0]


def test_failures_and_out_of_memory_become_verdicts(monkeypatch) -> None:
    gate = Gate(Constraints(max_cpu_ms=1e4), num_classes=10, profilers={"cpu": Profiler(FAST)})

    def raising(exc: Exception):
        def build(*args):
            raise exc

        return build

    monkeypatch.setattr(timing, "build_model", raising(RuntimeError("shape mismatch")))
    failed = gate.check(small_genome(num_filters=8))
    assert failed.status == Status.FAILED and "shape mismatch" in failed.reason
    monkeypatch.setattr(timing, "build_model", raising(MemoryError()))
    oom = gate.check(small_genome(num_filters=16))
    assert oom.status == Status.REJECTED and oom.constraint == "device_memory"
    assert oom.reason.startswith("out of memory on cpu")


def test_the_predictor_skips_obvious_violators_unmeasured() -> None:
    learned, checked, unseen = widths(8, 16, 24, 32), widths(12, 20, 28, 36, 40), widths(96, 128)
    runtime = {g.id: count_cost(g, 10).flops / 1e6 for g in learned + checked + unseen}
    profiler = Scripted(runtime)
    budget = 1.1 * runtime[learned[1].id]  # clear of every runtime: each is measured once
    gate = Gate(
        Constraints(max_cpu_ms=budget),
        num_classes=10,
        profilers={"cpu": profiler},
        early_exit_factor=1e9,  # every candidate is measured fully while the predictor learns
        min_fit_size=len(learned),
    )
    # Fitted after the first four; its predictions are checked on the next five.
    assert {gate.check(g).stage for g in learned + checked} == {"measurement"}
    assert gate.predictors["cpu"].accuracy().num_samples == len(checked)
    assert runtime[learned[-1].id] > 2 * budget  # and every wider network is slower still
    for g in unseen:
        verdict = gate.check(g)
        assert verdict.stage == "predictor" and verdict.constraint == "max_cpu_ms"
        assert verdict.value > 2 * budget and verdict.profiles == ()
    assert len(profiler.calls) == len(learned + checked)


def test_an_unchecked_or_overconfident_predictor_skips_nothing() -> None:
    predictor = LatencyPredictor(min_fit_size=1)
    genomes = widths(8, 16, 24, 32, 40, 48)
    for g in genomes[: MIN_CHECKED - 1]:
        predictor.learn(g, 10, 1.0, 1.0)
    assert predictor.skip_margin(2.0) is None  # one check short
    predictor.learn(genomes[-1], 10, 1.0, 3.0)  # and once three times the runtime
    assert predictor.skip_margin(2.0) == 3.0


def test_a_fitted_predictor_does_not_reject_what_fits_the_budget() -> None:
    genomes = widths(8, 16, 24, 32, 12)
    runtime = {g.id: count_cost(g, 10).flops / 1e6 for g in genomes}
    gate = Gate(
        Constraints(max_cpu_ms=runtime[genomes[1].id]),
        num_classes=10,
        profilers={"cpu": Scripted(runtime)},
        early_exit_factor=1e9,
        min_fit_size=4,
    )
    verdicts = [gate.check(g) for g in genomes]
    assert verdicts[-1].admitted and verdicts[-1].stage == "measurement"
    accuracy = gate.predictors["cpu"].accuracy()
    assert accuracy.num_samples == 1 and accuracy.within_tolerance == 1.0


def test_impossible_setups_are_refused_naming_the_field() -> None:
    with pytest.raises(InputError, match="max_gpu_ms: a cuda budget is set"):
        Gate(Constraints(max_gpu_ms=5), num_classes=10, profilers={"cpu": Profiler(FAST)})
    with pytest.raises(InputError, match="max_params: no network fits"):
        Gate(Constraints(max_params=3), num_classes=10)
    with pytest.raises(InputError, match="max_memory_mb: is set, but the gate has no profiler"):
        Gate(Constraints(max_memory_mb=100), num_classes=10)


def test_without_constraints_everything_is_admitted_and_measured() -> None:
    gate = Gate(Constraints(), num_classes=10, profilers={"cpu": Profiler(FAST)})
    verdict = gate.check(small_genome())
    assert verdict.admitted and verdict.profiles[0].median_ms > 0
    assert dataclasses.replace(verdict, seconds=0).seconds == 0


def test_frame_budgets_judge_the_measured_stream_and_fill_the_lineage() -> None:
    piped = dataclasses.replace(small_genome(), pipeline_depth=1)
    measured = Gate(Constraints(), num_classes=10, profilers={"cpu": Profiler(FAST)}).check(piped)
    frame_ms = measured.profiles[0].frame_ms
    assert frame_ms is not None and measured.profiles[0].frame_runs_ms

    def check(**limits: float):
        gate = Gate(Constraints(**limits), num_classes=10, profilers={"cpu": Profiler(FAST)})
        return gate.check(piped)

    too_slow = check(max_frame_ms=frame_ms / 10)
    assert too_slow.status == Status.REJECTED and too_slow.constraint == "max_frame_ms"
    assert too_slow.profiles and "max_frame_ms" in too_slow.reason
    too_few = check(min_frames_per_second=10_000 * 1000 / frame_ms)
    assert too_few.constraint == "min_frames_per_second" and too_few.value < too_few.limit
    admitted = check(max_frame_ms=frame_ms * 10, min_frames_per_second=1000 / frame_ms / 10)
    assert admitted.admitted
    values = gate_measurements(admitted)
    assert values["frame_ms"] == admitted.profiles[0].frame_ms
    assert values["latency_frames"] == admitted.profiles[0].latency_frames >= 0


def test_frame_budgets_need_a_profiler() -> None:
    with pytest.raises(InputError, match="max_frame_ms"):
        Gate(Constraints(max_frame_ms=5.0), num_classes=10)
    with pytest.raises(InputError, match="min_frames_per_second"):
        Constraints(min_frames_per_second=-1.0)
